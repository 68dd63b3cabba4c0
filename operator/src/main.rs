//! `operator`: runs the TiKVCluster controller against the cluster it finds
//! (in-cluster service account or kubeconfig), behind a leader Lease, with
//! `/metrics`, `/healthz` and `/readyz` on its HTTP port.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use clap::{ArgAction, Parser};
use kube::Client;
use shale_operator::lease::{LeaderElector, LeaseConfig};
use shale_operator::metrics::Metrics;
use shale_operator::placement_api::HttpPlacement;
use shale_operator::{run, Config, Context};

#[derive(Parser, Debug)]
#[command(
    name = "operator",
    version,
    about = "Shale operator for TiKVCluster resources"
)]
struct Args {
    /// Image repository of the servers when a TiKVCluster names none
    /// (the tag is the cluster's spec.version).
    #[arg(long, env = "SHALE_DEFAULT_IMAGE", default_value = "shale")]
    default_image: String,
    /// Watch only this namespace [default: all namespaces].
    #[arg(long, env = "SHALE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "SHALE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Run the controller only while holding the leader Lease.
    #[arg(long, env = "SHALE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "SHALE_LEASE_NAME", default_value = "shale-operator")]
    lease_name: String,
    /// Namespace of the leader Lease [default: the client's namespace].
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds to wait for leaders to leave a store before restarting its pod.
    #[arg(long, env = "SHALE_EVICT_LEADER_TIMEOUT", default_value_t = 120)]
    evict_leader_timeout: u64,
    /// Timeout of each request to placement, in seconds.
    #[arg(long, env = "SHALE_PLACEMENT_TIMEOUT", default_value_t = 5)]
    placement_timeout: u64,
    /// Log filter, e.g. `info` or `shale_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("operator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
    let placement = HttpPlacement::new(Duration::from_secs(args.placement_timeout))
        .map_err(|e| format!("placement client: {e}"))?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "shale-operator".to_string());
    let config = Config {
        default_image: args.default_image.clone(),
        evict_leader_timeout: Duration::from_secs(args.evict_leader_timeout),
        namespace: args.namespace.clone(),
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(placement),
        metrics.clone(),
        config,
        Some(identity.clone()),
    ));

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http_addr))?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(addr = %args.http_addr, "serving /metrics, /healthz and /readyz");

    if !args.leader_election {
        run(ctx).await;
        return Ok(());
    }
    let namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let elector = LeaderElector::new(
        client,
        LeaseConfig {
            name: args.lease_name.clone(),
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        },
    );
    elector
        .lead(&metrics, run(ctx))
        .await
        .map_err(|e| e.to_string())
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> String {
    metrics.render()
}

//! A mock API server for reconciler tests: a `tower_test` pair behind
//! `kube::Client`, and a script that expects each call in order (method,
//! exact path with query, body) and answers it. A missing call, an extra
//! call or a call out of order fails the test.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

use crate::controller::{Config, Context};
use crate::fixtures::FakePlacement;
use crate::metrics::Metrics;

pub const FIELD_MANAGER_QUERY: &str = "?&force=true&fieldManager=shale-operator";

/// The fixed "now" of reconciler tests.
pub fn test_now() -> Timestamp {
    Timestamp::UNIX_EPOCH + k8s_openapi::jiff::SignedDuration::from_secs(1_700_000_000)
}

/// A client whose every request goes to the returned script handle.
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

pub fn context(placement: Arc<FakePlacement>) -> (Arc<Context>, ApiServer) {
    let (client, server) = client();
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("metrics: {e}")));
    let mut ctx = Context::new(
        client,
        placement,
        metrics,
        Config::default(),
        Some("test".into()),
    );
    ctx.placement_url = |_, _| "http://placement.test".to_string();
    ctx.clock = test_now;
    (Arc::new(ctx), server)
}

pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One received call, to be answered.
pub struct Call {
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    pub fn reply(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap_or_else(|e| panic!("response: {e}"));
        self.send.send_response(response);
    }

    pub fn ok(self, body: &Value) {
        self.reply(StatusCode::OK, body);
    }

    /// Answers with the request body itself (what an apply returns).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(&body);
    }

    pub fn not_found(self) {
        self.reply(
            StatusCode::NOT_FOUND,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "NotFound", "code": 404,
                "message": "not found"
            }),
        );
    }
}

impl ApiServer {
    /// The next call must have this method and exactly this path and query.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let Some((request, send)) = self.0.next_request().await else {
            panic!("expected {method} {path}, but the reconciler made no further call");
        };
        let actual = format!("{} {}", request.method(), request.uri());
        assert_eq!(actual, format!("{method} {path}"), "unexpected API call");
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_else(|e| panic!("request body: {e}"));
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("request body is not JSON: {e}"))
        };
        Call { body, send }
    }

    /// A server-side apply of `kind`/`name` with the operator's field manager.
    pub async fn expect_apply(&mut self, collection: &str, name: &str) -> Value {
        let call = self
            .expect(
                "PATCH",
                &format!("{collection}/{name}{FIELD_MANAGER_QUERY}"),
            )
            .await;
        let body = call.body.clone();
        assert_eq!(body["metadata"]["name"], name);
        call.echo();
        body
    }

    /// An event about the cluster with this reason; returns its body.
    pub async fn expect_event(&mut self, reason: &str) -> Value {
        let call = self
            .expect("POST", "/apis/events.k8s.io/v1/namespaces/default/events?")
            .await;
        let body = call.body.clone();
        assert_eq!(body["reason"], reason, "event {body}");
        assert_eq!(body["regarding"]["kind"], "TiKVCluster");
        assert_eq!(body["reportingController"], "shale-operator");
        call.echo();
        body
    }
}

/// Runs `reconcile` against the scripted server. Fails when the script
/// panics, when the reconciler makes a call the script does not answer, or
/// when the script expects a call the reconciler never makes.
pub async fn run<T>(
    ctx: Arc<Context>,
    reconcile: impl Future<Output = T>,
    script: impl Future<Output = ()> + Send + 'static,
) -> T {
    let script = tokio::spawn(script);
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile)
        .await
        .unwrap_or_else(|_| {
            panic!("the reconciler waits for an API call the script did not expect")
        });
    // With the client gone, a script still waiting for a call sees the end.
    drop(ctx);
    match tokio::time::timeout(Duration::from_secs(10), script).await {
        Ok(Ok(())) => result,
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("the script did not finish"),
    }
}

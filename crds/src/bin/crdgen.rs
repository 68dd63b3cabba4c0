//! `crdgen`: prints the TiKVCluster CRD as YAML. The chart's copy is its output:
//! `cargo run -p shale-crds --bin crdgen > charts/shale-operator/crds/tikvclusters.shale.dev.yaml`

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match shale_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().write_all(yaml.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The chart ships the CRD that `crdgen` prints; they must never drift.

use std::path::PathBuf;

#[test]
fn chart_crd_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/shale-operator/crds/tikvclusters.shale.dev.yaml");
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = shale_crds::crd_yaml().unwrap_or_else(|e| panic!("crdgen failed: {e}"));
    assert!(
        shipped == generated,
        "{} differs from the generated CRD; regenerate it with\n  \
         cargo run -p shale-crds --bin crdgen > charts/shale-operator/crds/tikvclusters.shale.dev.yaml",
        path.display()
    );
}

//! The TiKV-compatible wire protocol that Shale serves, plus Shale's internal
//! messages. Package names mirror kvproto so that gRPC paths match exactly.
#![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]

macro_rules! include_package {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        })*
    };
}

include_package!(
    metapb,
    errorpb,
    eraftpb,
    kvrpcpb,
    pdpb,
    tikvpb,
    keyspacepb,
    raftpb,
    storeraftpb
);

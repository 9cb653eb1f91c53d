//! The admin socket: requests as the agent decodes them, replies as `dnngovctl` and the
//! profiler decode them.
//!
//! Checks: no panic; a decoded request or reply survives encode -> decode unchanged;
//! only `status` and `apps` are read-only.
#![no_main]

use governor_proto::admin::{AdminReply, AdminRequest, MAX_ADMIN_PACKET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_ADMIN_PACKET {
        return;
    }
    if let Ok(request) = serde_json::from_slice::<AdminRequest>(data) {
        let text = serde_json::to_vec(&request).expect("admin requests serialise");
        let again: AdminRequest = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{request:?} encoded does not decode: {e}"));
        assert_eq!(again, request, "encode -> decode changed the request");
        assert_eq!(
            request.is_read_only(),
            matches!(request, AdminRequest::Status | AdminRequest::Apps)
        );
    }
    if let Ok(reply) = serde_json::from_slice::<AdminReply>(data) {
        let text = serde_json::to_vec(&reply).expect("admin replies serialise");
        let again: AdminReply = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{reply:?} encoded does not decode: {e}"));
        assert_eq!(again, reply, "encode -> decode changed the reply");
    }
});

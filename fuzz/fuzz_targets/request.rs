//! An app's socket packets as the agent decodes them (`decode_request`), and the agent's
//! replies as the client library decodes them.
//!
//! Checks: no panic; a refusal carries a sentence; an accepted request passes the
//! protocol's validation on its own and survives encode -> decode unchanged; a reply
//! survives encode -> decode unchanged.
#![no_main]

use governor_proto::message::{Reply, Request};
use governor_proto::validate::{validate_register, validate_target};
use governor_proto::{decode_request, encode, MAX_PACKET_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(request) => {
            assert!(data.len() <= MAX_PACKET_BYTES);
            match &request {
                Request::Register(register) => validate_register(register).unwrap(),
                Request::SetTarget { target } => validate_target(target).unwrap(),
            }
            let again = decode_request(&encode(&request))
                .unwrap_or_else(|e| panic!("{request:?} encoded does not decode: {e}"));
            assert_eq!(again, request, "encode -> decode changed the request");
        }
        Err(error) => {
            assert!(!error.message.is_empty(), "a refusal without a message");
            assert!(matches!(error.to_reply(), Reply::Error { .. }));
        }
    }
    // What the client library reads from the agent.
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        let again: Reply = serde_json::from_slice(&encode(&reply))
            .unwrap_or_else(|e| panic!("{reply:?} encoded does not decode: {e}"));
        assert_eq!(again, reply, "encode -> decode changed the reply");
    }
});

//! Feeds arbitrary bytes to the coordination protocol's message decoders,
//! both directions (the coordinator parses `ClientMessage`s from peers, peers
//! parse `ServerMessage`s), and checks the node rules on whatever decodes.
//! Nothing may panic; whatever decodes must encode to JSON that decodes to
//! the same message.
#![no_main]

use codersdk::coordination::{ClientMessage, ServerMessage};
use libfuzzer_sys::fuzz_target;
use mesh::Node;

fn check_node(node: &Node) {
    // Either verdict is fine; it must be the one the derivation gives.
    let owned = mesh::mesh_addresses(node.id);
    assert_eq!(node.check_addresses().is_ok(), node.addresses == owned);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = serde_json::from_slice::<ClientMessage>(data) {
        if let ClientMessage::Node { node } = &msg {
            check_node(node);
        }
        let json = serde_json::to_vec(&msg).expect("a decoded message encodes");
        let back: ClientMessage = serde_json::from_slice(&json).expect("and decodes again");
        assert_eq!(back, msg);
    }
    if let Ok(msg) = serde_json::from_slice::<ServerMessage>(data) {
        if let ServerMessage::Node { node, .. } = &msg {
            check_node(node);
        }
        let json = serde_json::to_vec(&msg).expect("a decoded message encodes");
        let back: ServerMessage = serde_json::from_slice(&json).expect("and decodes again");
        assert_eq!(back, msg);
    }
});

//! capstan's node agent. Today it holds the node simulator (`simulate`): fake Nodes that
//! register, heartbeat and play the kubelet's part for the pods bound to them.

pub mod simulate;

//! The ReplicationController loop (upstream `replicationcontroller`): the ReplicaSet loop's
//! code over core/v1 ReplicationControllers (a map selector instead of a LabelSelector).

use std::sync::Arc;

use crate::context::Context;

pub async fn run(ctx: Arc<Context>) {
    crate::replicaset::run_rc(ctx).await
}

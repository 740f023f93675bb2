//! The backend's control of sessions on three gateways over a Redis Cluster: the control
//! channel, the revocations and the node registry live in one slot, and every command
//! reaches every gateway; a gateway that dies drops out of `/api/info`.

use crate::local_cluster::*;
use crate::support::*;

#[tokio::test]
async fn every_gateway_applies_the_backends_commands_on_a_redis_cluster() {
    let cluster = LocalCluster::start();
    let g1 = gateway_on(&cluster, "g1").await;
    let g2 = gateway_on(&cluster, "g2").await;
    let g3 = gateway_on(&cluster, "g3").await;
    every_node_applies_the_backends_commands([&g1, &g2, &g3], &|args| cluster.cli(args)).await;
    // A gateway that dies drops out of the registry.
    let mut g3 = g3;
    g3.signal("KILL");
    g3.wait_exit(std::time::Duration::from_secs(10));
    wait_for_nodes(&g1, &["g1", "g2"]).await;
}

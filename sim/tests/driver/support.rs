//! Starting a simulator per test and connecting the official driver to it.

use mongo_sim::{SimHandle, SimOptions};
use mongodb::Client;

pub struct Sim {
    pub handle: SimHandle,
    pub client: Client,
}

pub async fn sim() -> Sim {
    sim_with(SimOptions::default()).await
}

pub async fn sim_with(opts: SimOptions) -> Sim {
    let handle = mongo_sim::start(opts).await.expect("start simulator");
    let client = Client::with_uri_str(handle.uri()).await.expect("client");
    Sim { handle, client }
}

impl Sim {
    pub async fn stop(self) {
        // Immediate: tests may still hold cursors, which a graceful shutdown awaits.
        self.client.shutdown().immediate(true).await;
        self.handle.shutdown().await;
    }
}

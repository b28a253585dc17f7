//! A throwaway PostgreSQL server per test binary, and a fresh database per test.
//!
//! The server starts once, on first use (`TestCluster::shared`). Outside
//! CI, a machine without the PostgreSQL server binaries skips the
//! PostgreSQL tests with a message; under `CI=true` that is a failure, so
//! CI never silently skips them.

#![allow(dead_code)]

use std::sync::Arc;

use casebook::log::pg::{PgEventStore, PgStoreConfig, TestCluster};

/// The shared test server, or `None` where PostgreSQL tests are skipped.
pub async fn cluster() -> Option<&'static TestCluster> {
    tokio::task::spawn_blocking(TestCluster::shared)
        .await
        .expect("starting the test server")
}

/// A fresh database's URL, or `None` where PostgreSQL tests are skipped.
pub async fn database() -> Option<String> {
    let cluster = cluster().await?;
    Some(
        cluster
            .new_database()
            .await
            .expect("creating a test database"),
    )
}

/// A store on a fresh database with `tune` applied to its settings.
pub async fn store_with(tune: impl FnOnce(&mut PgStoreConfig)) -> Option<(PgEventStore, String)> {
    let url = database().await?;
    let mut config = PgStoreConfig::new(url.clone());
    tune(&mut config);
    let store = PgEventStore::connect(config)
        .await
        .expect("connecting the store");
    Some((store, url))
}

/// A store on a fresh database, as a conformance fixture.
pub async fn fixture() -> Option<crate::common::Fixture> {
    let (store, _) = store_with(|_| {}).await?;
    Some(crate::common::Fixture {
        store: Arc::new(store),
        dir: None,
    })
}

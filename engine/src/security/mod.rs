//! Security in the core: classifications (and, as the engine grows, principals,
//! roles and the audit of who consulted or disclosed what).

mod classification;

pub use classification::{Classification, ParseClassificationError};

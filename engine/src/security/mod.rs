//! Security in the core: classifications, vetting, and the [`Principal`] every
//! engine call takes (and, as the engine grows, the audit of who consulted or
//! disclosed what).

mod classification;
mod principal;

pub use classification::{Classification, ParseClassificationError};
pub use principal::{Principal, Vetting};

//! Where the managed-identity token comes from (`imds`) and what it is (`token`).

pub mod imds;
pub mod token;

//! Pipeline stages, grouped by the kind of image they take and give.

pub mod awb;
pub mod bilateral;
pub mod blc;
pub mod demosaic;
pub mod gamma;
pub mod sharpen;

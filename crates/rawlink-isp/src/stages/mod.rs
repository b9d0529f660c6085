//! Pipeline stages, grouped by the kind of image they take and give.
//!
//! Kernels index rows explicitly (`row[x - 1]`, `row[x + 1]`): clearer for stencils
//! than iterator chains, and bounds checks hoist out of the loops.
#![allow(clippy::needless_range_loop)]

pub mod awb;
pub mod bilateral;
pub mod blc;
pub mod color;
pub mod demosaic;
pub mod denoise;
pub mod dpc;
pub mod gamma;
pub mod lsc;
pub mod malvar;
pub mod pad;
pub mod rcd;
pub mod sharpen;
pub mod wb;

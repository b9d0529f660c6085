//! Raw V4L2 bindings: `bindgen` output for `#include <linux/videodev2.h>`, committed.
#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]
#![allow(dead_code)]

include!("v4l2_bindings.rs");

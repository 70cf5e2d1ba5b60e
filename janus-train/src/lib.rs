//! janus-train

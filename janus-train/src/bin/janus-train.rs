fn main() { eprintln!("janus-train: not yet wired"); std::process::exit(2); }

fn main() {
    eprintln!("coder-agent: not implemented yet");
    std::process::exit(1);
}

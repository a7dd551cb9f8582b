//! Runs `broker` inputs (files, or every file of directories) without libFuzzer:
//! `MIDGE_FUZZ_TRACE=1 cargo run --example replay -- corpus/broker/qos_flows`.
fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let files: Vec<_> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::env::var_os("MIDGE_FUZZ_TRACE").is_some() {
                eprintln!("{:#?}", midge_fuzz::broker::ops::decode(&data));
            }
            eprintln!("{}", f.display());
            midge_fuzz::broker::run(&data);
        }
    }
}

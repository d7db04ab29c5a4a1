//! Feeds arbitrary bytes to the other parsers of peer input: the stream's
//! service header and the certificate key extractor. Neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh::{tls, Service};

fuzz_target!(|data: &[u8]| {
    if let Ok(service) = Service::from_header_name(data) {
        let header = service.header();
        assert_eq!(header.get(1..).map(Service::from_header_name), Some(Ok(service)));
    }
    let _ = tls::certificate_key(data);
});

//! Fuzzes eddy's URL path parser: it never panics, and every stream path it reads
//! survives a round trip through its URL and canonical argument forms.

#![no_main]

use eddy_engine::path::{Args, Resource, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(resource) = parse(raw) else { return };
    for stream in resource.stream_paths() {
        let url = stream.url();
        assert_eq!(
            parse(&url),
            Ok(Resource::Stream(stream.clone())),
            "{raw:?} -> {url:?}"
        );
        if let Some(args) = &stream.args {
            let canonical = args.canonical();
            let again = Args::parse(&canonical).expect("a canonical argument list parses");
            assert_eq!(again.canonical(), canonical, "{raw:?}");
            assert_eq!(&again, args, "{raw:?}");
        }
    }
});

//! Fuzz targets for every decoder and patch type a client can reach: JSON, YAML and
//! protobuf bodies, JSON/merge/strategic patches and apply configurations. Inputs are the
//! corpus in `tests/fuzz-corpus/` (the reproductions of attacks that once hurt the server)
//! mutated by proptest; failures shrink and are kept in `proptest-regressions/`.
//! Each input must give a value or a 4xx `ApiError` — never a panic, never a 5xx — within a
//! time bound. `FUZZ_CASES` sets the cases per target (scripts/test raises it).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use capstan_apiserver::discovery::openapi;
use capstan_apiserver::encoding::protobuf;
use capstan_apiserver::patch::{apply, merge as patch};
use capstan_apiserver::status::ApiError;
use capstan_apiserver::types::{builtin as builtin_types, registry};
use capstan_apiserver::{limits, rest};
use proptest::prelude::*;
use serde_json::Value;

/// The slowest any single input may take (the slowest real case takes milliseconds).
const PER_INPUT: Duration = Duration::from_secs(3);

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Tokens that matter to the decoders: nesting, quoting, YAML anchors and directives.
const TOKENS: &[&str] = &[
    "{\"a\":",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\\",
    ",",
    ":",
    "null",
    "-1",
    "1e999",
    "*a",
    "&a ",
    "- ",
    "\n  ",
    "!!binary ",
    "<<: ",
    "$patch",
    "\"op\":\"copy\"",
    "\"from\":\"/\"",
    "/-",
    "\"$setElementOrder/containers\":",
    "\u{0}",
    "\u{feff}",
    "k8s\u{0}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(u32, u8),
    Insert(u32, usize, u8),
    Delete(u32, u16),
    Duplicate(u32, u16, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u32>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<u32>(), 0..TOKENS.len(), 1u8..64).prop_map(|(p, t, n)| Mutation::Insert(p, t, n)),
        (any::<u32>(), 1u16..512).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<u32>(), 1u16..256, 1u8..16).prop_map(|(p, n, k)| Mutation::Duplicate(p, n, k)),
    ]
}

fn mutate(mut input: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = input.len().max(1);
        match *m {
            Mutation::Flip(p, b) => {
                if !input.is_empty() {
                    let at = p as usize % len;
                    input[at] ^= b;
                }
            }
            Mutation::Insert(p, t, n) => {
                let at = p as usize % (input.len() + 1);
                let ins = TOKENS[t].repeat(n as usize);
                input.splice(at..at, ins.into_bytes());
            }
            Mutation::Delete(p, n) => {
                if !input.is_empty() {
                    let at = p as usize % len;
                    let end = (at + n as usize).min(input.len());
                    input.drain(at..end);
                }
            }
            Mutation::Duplicate(p, n, k) => {
                if !input.is_empty() {
                    let at = p as usize % len;
                    let end = (at + n as usize).min(input.len());
                    let piece = input[at..end].repeat(k as usize);
                    input.splice(end..end, piece);
                }
            }
        }
    }
    input.truncate(4 << 20);
    input
}

fn input_for(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "no corpus for {target}");
    prop_oneof![
        4 => (0..seeds.len(), prop::collection::vec(mutation(), 0..6))
            .prop_map(move |(i, muts)| mutate(seeds[i].clone(), &muts)),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// A decoder's answer is fine if it is a value, or an error a client caused (4xx).
fn client_error_or_ok<T>(what: &str, input: &[u8], r: Result<T, ApiError>) {
    if let Err(e) = r {
        assert!(
            e.code.is_client_error(),
            "{what}: a {} for input {:?}: {}",
            e.code,
            String::from_utf8_lossy(&input[..input.len().min(300)]),
            e.message
        );
    }
}

/// Run `f` with the server's thread stack (objects as deep as the API admits recurse) and
/// a deadline.
fn bounded(what: &'static str, input: Vec<u8>, f: fn(&[u8])) {
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        .stack_size(limits::THREAD_STACK_BYTES)
        .spawn(move || f(&input))
        .unwrap();
    worker.join().expect("decoder panicked");
    assert!(
        started.elapsed() < PER_INPUT,
        "{what} took {:?} on one input",
        started.elapsed()
    );
}

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    ProptestConfig {
        cases,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

fn base_pod() -> Value {
    serde_json::from_slice(&corpus("json")[5]).unwrap()
}

fn pod_schema() -> &'static openapi::OpenApi {
    static DOC: OnceLock<openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| openapi::OpenApi::build(&registry::Registry::new(builtin_types::builtin())))
}

fn patch_with(content_type: &str, body: &[u8]) -> Result<(), ApiError> {
    let mut doc = base_pod();
    patch::apply_to(&mut doc, content_type, body, false)?;
    rest::check_shape(&doc)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_bodies(input in input_for("json")) {
        bounded("JSON body", input, |b| client_error_or_ok("JSON body", b, rest::decode_body("application/json", b)));
    }

    #[test]
    fn yaml_bodies(input in input_for("yaml")) {
        bounded("YAML body", input, |b| client_error_or_ok("YAML body", b, rest::decode_body("application/yaml", b)));
    }

    #[test]
    fn protobuf_bodies(input in input_for("protobuf")) {
        bounded("protobuf body", input, |b| client_error_or_ok("protobuf body", b, rest::decode_body(protobuf::CONTENT_TYPE, b)));
    }

    #[test]
    fn json_patches(input in input_for("json-patch")) {
        bounded("JSON patch", input, |b| client_error_or_ok("JSON patch", b, patch_with("application/json-patch+json", b)));
    }

    #[test]
    fn merge_patches(input in input_for("merge-patch")) {
        bounded("merge patch", input, |b| client_error_or_ok("merge patch", b, patch_with("application/merge-patch+json", b)));
    }

    #[test]
    fn strategic_patches(input in input_for("strategic-patch")) {
        bounded("strategic merge patch", input, |b| {
            let parsed = limits::parse_request_json::<Value>(b, "the patch")
                .and_then(|r| r.map_err(|e| ApiError::bad_request(e.to_string())));
            let r = parsed.and_then(|p| {
                let doc = pod_schema();
                let cursor = doc
                    .schema_for("", "v1", "Pod")
                    .map(|(root, defs)| capstan_apiserver::patch::strategic_merge::Cursor::new(root, defs));
                let mut target = base_pod();
                if !p.is_object() {
                    return Err(ApiError::bad_request("not an object"));
                }
                capstan_apiserver::patch::strategic_merge::merge(&mut target, &p, cursor);
                rest::check_shape(&target)
            });
            client_error_or_ok("strategic merge patch", b, r)
        });
    }

    #[test]
    fn apply_configurations(input in input_for("apply")) {
        bounded("apply configuration", input, |b| client_error_or_ok("apply configuration", b, apply::decode(b)));
    }
}

/// The corpus itself, unmutated: each reproduction gets the answer it should.
#[test]
fn corpus_reproductions_get_their_answers() {
    bounded("corpus", Vec::new(), |_| {
        let json = corpus("json");
        assert!(
            rest::decode_body("application/json", &json[1]).is_ok(),
            "depth at the limit"
        );
        assert_eq!(
            rest::decode_body("application/json", &json[2])
                .unwrap_err()
                .code,
            400
        );
        let yaml = corpus("yaml");
        assert_eq!(
            rest::decode_body("application/yaml", &yaml[1])
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            rest::decode_body("application/yaml", &yaml[3])
                .unwrap_err()
                .code,
            400
        );
        let jp = corpus("json-patch");
        let bomb = patch_with("application/json-patch+json", &jp[0]).unwrap_err();
        assert_eq!(bomb.code, 422, "{}", bomb.message);
        assert_eq!(
            patch_with("application/json-patch+json", &jp[2])
                .unwrap_err()
                .code,
            422
        );
        let deepen = patch_with("application/json-patch+json", &jp[1]).unwrap_err();
        assert_eq!(deepen.code, 400, "{}", deepen.message);
        let pb = corpus("protobuf");
        let cm = rest::decode_body(protobuf::CONTENT_TYPE, &pb[0]).unwrap();
        assert_eq!(cm["data"]["k"], "v");
    });
}

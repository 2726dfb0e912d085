//! Which requests are mirrored to the canary, and what the copy looks like.
//!
//! The point of the filter is that a copy must be safe to run twice: only methods that are
//! idempotent (RFC 9110 section 9.2.2) are mirrored, a method-override header naming anything
//! else blocks the copy, and path prefixes keep out the GETs that have side effects anyway
//! (`GET /logout`). The decision is made from the request headers alone; the body limit is
//! checked while the body streams (see the host adapter).
//!
//! gRPC calls are all POSTs, and whether one has side effects is written in its `.proto`, not
//! on the wire: a gRPC request is mirrored only when `mirror.grpc.methods` declares its method
//! (src/grpc.rs), and only a unary or server-streaming call, which the stream tells by its
//! framing (`grpc::RequestFraming`).

use crate::bucket;
use crate::classify::ClassId;
use crate::compare::CompareSpec;
use crate::grpc::{self, MethodPattern};
use crate::label::label_enum;
use crate::noise::NoiseSettings;
use crate::request::{BucketKey, Request};

/// An HTTP method the filter knows. Only the idempotent ones may be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Trace,
    Put,
    Delete,
    Post,
    Patch,
    Connect,
}

impl Method {
    pub const IDEMPOTENT: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Options,
        Method::Trace,
        Method::Put,
        Method::Delete,
    ];

    /// Methods are case-sensitive (RFC 9110 section 9.1): `get` is not `GET`.
    pub fn parse(s: &[u8]) -> Option<Method> {
        Some(match s {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"POST" => Method::Post,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => return None,
        })
    }

    /// [`Method::parse`] of `s` in upper case, without making the upper-case copy: override
    /// headers are read on every request that carries one.
    fn parse_ignore_case(s: &[u8]) -> Option<Method> {
        // A token longer than the longest method name (7 bytes) is no method.
        let mut buf = [0u8; 7];
        let upper = buf.get_mut(..s.len())?;
        for (u, b) in upper.iter_mut().zip(s) {
            *u = b.to_ascii_uppercase();
        }
        Method::parse(upper)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
        }
    }
}

/// Headers clients and frameworks use to tunnel another method through a POST (or a GET).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus RFC 2616's proxy credentials, which are
/// for this hop's proxy and not the canary's business) and the ones the copy gets afresh:
/// Envoy sets `content-length` from the copy's body, and the body is complete, so nothing
/// waits on `expect: 100-continue`. A gRPC copy keeps `te: trailers`, which gRPC servers
/// require (its only value HTTP/2 allows; Envoy drops any other).
const NOT_COPIED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// The compiled `mirror` section.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub cluster: String,
    pub authority_suffix: String,
    /// Lowercase.
    pub marker_header: String,
    pub basis_points: u32,
    pub sample_key: Option<BucketKey>,
    /// Classes that are mirrored; `None` for all.
    pub classes: Option<Vec<ClassId>>,
    pub include_paths: Vec<String>,
    pub exclude_paths: Vec<String>,
    pub methods: Vec<Method>,
    /// Lowercase; `None` when POST and PATCH are never mirrored.
    pub idempotency_key_header: Option<String>,
    pub timeout_ms: u32,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    /// Lowercase.
    pub remove_headers: Vec<String>,
    pub compare: CompareSpec,
    /// `None`: the canary is compared with the primary alone.
    pub baseline: Option<Baseline>,
    /// Copies to the canary per second per worker; 0: no limit.
    pub max_per_second: u32,
    /// `mirror.grpc.methods`: the gRPC methods declared free of side effects. Empty: no gRPC
    /// call is mirrored.
    pub grpc_methods: Vec<MethodPattern>,
}

/// The compiled `mirror.baseline` section: another deployment of the primary's version that
/// gets the same copy as the canary. Where the primary and the baseline differ is noise (two
/// healthy instances of one version do), and the canary is judged against the baseline with
/// that noise set aside.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub cluster: String,
    /// Of the mirrored requests, how many also go to the baseline.
    pub basis_points: u32,
    /// `mirror.noise`, or its defaults.
    pub noise: NoiseSettings,
}

label_enum! {
    /// Why a request was or was not mirrored: the `decision` label of
    /// `progressive_delivery_mirror_total`. Each request with a `mirror` section gets exactly one.
    pub enum Decision {
        Mirrored = "mirrored",
        NotIdempotent = "not_idempotent",
        PathExcluded = "path_excluded",
        NotSampled = "not_sampled",
        ClassExcluded = "class_excluded",
        BodyTooLarge = "body_too_large",
        Overloaded = "overloaded",
        IsMirror = "is_mirror",
        DispatchFailed = "dispatch_failed",
        HeaderNotUtf8 = "header_not_utf8",
        /// `mirror.max_per_second` copies went to the canary in the last second already.
        RateLimited = "rate_limited",
        /// A gRPC call to a method `mirror.grpc.methods` does not declare.
        GrpcNotDeclared = "grpc_not_declared",
    }
}

/// The seed of the sample bucket: fixed and distinct from the classification seeds' default
/// (`""`), so "mirror 5%" is not the same users as a 5% canary cohort keyed on the same cookie.
pub const SAMPLE_SEED: &[u8] = b"mirror";

impl Mirror {
    /// Decides from the request headers whether this request is a candidate for mirroring.
    /// `Err` carries the decision to count when it is not. `assigned` are the ids the
    /// classifier just gave a first-time visitor (so a fresh `uid` samples like it will on
    /// every later request); `draw` returns a uniform random bucket in `0..10000`, or `None`
    /// when the host has no randomness (then the request is not sampled).
    pub fn decide(
        &self,
        headers: &[(String, Vec<u8>)],
        class: ClassId,
        assigned: &[(String, String)],
        draw: impl FnOnce() -> Option<u32>,
    ) -> Result<(), Decision> {
        let req = Request::new(headers);
        if req.values(&self.marker_header).next().is_some() {
            return Err(Decision::IsMirror);
        }
        let path = req.values(":path").next().unwrap_or_default();
        if is_grpc(&req) {
            // A gRPC call is a POST whatever it does; its declaration is what makes it safe.
            // Streams from the client are told apart later, from the body's framing.
            if req.values(":method").next() != Some(b"POST".as_slice())
                || !grpc::is_declared(&self.grpc_methods, path)
            {
                return Err(Decision::GrpcNotDeclared);
            }
        } else if !self.idempotent(&req) {
            return Err(Decision::NotIdempotent);
        }
        if !self.path_included(path) {
            return Err(Decision::PathExcluded);
        }
        if let Some(classes) = &self.classes {
            if !classes.contains(&class) {
                return Err(Decision::ClassExcluded);
            }
        }
        if !self.sampled(&req, assigned, draw) {
            return Err(Decision::NotSampled);
        }
        // A declared length over the limit is known now; a streamed body is checked as it comes.
        let declared = req
            .values("content-length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(Decision::BodyTooLarge);
        }
        Ok(())
    }

    fn allowed(&self, method: Option<Method>, has_idempotency_key: bool) -> bool {
        match method {
            Some(Method::Post | Method::Patch) => has_idempotency_key,
            Some(m) => self.methods.contains(&m),
            None => false,
        }
    }

    fn idempotent(&self, req: &Request<'_>) -> bool {
        // Upgrades (WebSocket; HTTP/2 extended CONNECT) open a stateful session: replaying the
        // handshake is not a copy of one request.
        if req.values("upgrade").next().is_some() || req.values(":protocol").next().is_some() {
            return false;
        }
        let has_key = self.idempotency_key_header.as_deref().is_some_and(|name| {
            req.values(name)
                .any(|v| !v.iter().all(u8::is_ascii_whitespace))
        });
        let method = req.values(":method").next().unwrap_or_default();
        if !self.allowed(Method::parse(method), has_key) {
            return false;
        }
        // The server acts on the overriding method, so it must be allowed too. Compared
        // case-insensitively: frameworks accept `post`, and this is the safe direction.
        METHOD_OVERRIDE_HEADERS.iter().all(|name| {
            req.values(name).all(|value| {
                value
                    .split(|b| *b == b',')
                    .all(|m| self.allowed(Method::parse_ignore_case(m.trim_ascii()), has_key))
            })
        })
    }

    /// String prefixes of the path without its query, like an Envoy route's `prefix`.
    pub fn path_included(&self, path: &[u8]) -> bool {
        let end = path
            .iter()
            .position(|b| matches!(b, b'?' | b'#'))
            .unwrap_or(path.len());
        let path = path.get(..end).unwrap_or_default();
        let under = |prefixes: &[String]| prefixes.iter().any(|p| path.starts_with(p.as_bytes()));
        (self.include_paths.is_empty() || under(&self.include_paths)) && !under(&self.exclude_paths)
    }

    fn sampled(
        &self,
        req: &Request<'_>,
        assigned: &[(String, String)],
        draw: impl FnOnce() -> Option<u32>,
    ) -> bool {
        if self.basis_points >= bucket::BUCKETS {
            return true;
        }
        if self.basis_points == 0 {
            return false;
        }
        let key = self
            .sample_key
            .as_ref()
            .and_then(|key| req.bucket_id(key, assigned));
        match key {
            Some(key) => bucket::in_cohort(SAMPLE_SEED, key, self.basis_points),
            // Without a key there is nothing to be sticky on: sample this request alone.
            None => draw().is_some_and(|b| b < self.basis_points),
        }
    }

    /// The headers of the copy: the request's (as the filter left them: `class_headers`
    /// replace any the client sent), minus hop-by-hop and `remove_headers`, with the marker
    /// and the suffixed authority. A gRPC copy keeps `te` and carries a `grpc-timeout` no
    /// longer than `timeout_ms` ([`grpc::capped_timeout`]). Takes the request's headers to reuse them: no header
    /// (a 4 KB cookie, say) is copied to make the copy.
    ///
    /// `Err(HeaderNotUtf8)` when a header of the copy is not UTF-8: the Proxy-Wasm SDK's
    /// callout takes text headers, and a copy that does not carry the request's bytes as they
    /// are would compare the canary on a request the client never sent. It is the client's
    /// doing, not the canary's, so it is a decision, not a failed comparison.
    pub fn copy_headers(
        &self,
        mut headers: Vec<(String, Vec<u8>)>,
        class_headers: &[(&str, Option<&[u8]>)],
    ) -> Result<Vec<(String, String)>, Decision> {
        let listed_in_connection: Vec<Vec<u8>> = headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(|b| *b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let grpc = is_grpc(&Request::new(&headers));
        let timeout = if grpc {
            let client = headers
                .iter()
                .find(|(n, _)| n == "grpc-timeout")
                .map(|(_, v)| v.as_slice());
            grpc::capped_timeout(client, self.timeout_ms)
        } else {
            None
        };
        let dropped = |name: &str| {
            (NOT_COPIED.contains(&name) && !(grpc && name == "te"))
                || (timeout.is_some() && name == "grpc-timeout")
                || self.remove_headers.iter().any(|r| r == name)
                || name == self.marker_header
                || class_headers.iter().any(|(n, _)| *n == name)
                || listed_in_connection.iter().any(|t| t == name.as_bytes())
        };
        headers.retain(|(name, _)| !dropped(name));
        for (name, value) in headers.iter_mut() {
            if name == ":authority" {
                *value = self.shadow_authority(value);
            }
        }
        headers.reserve(class_headers.len().saturating_add(2));
        for (name, value) in class_headers {
            if let Some(v) = value {
                headers.push(((*name).to_string(), v.to_vec()));
            }
        }
        if let Some(timeout) = timeout {
            headers.push(("grpc-timeout".to_string(), timeout.into_bytes()));
        }
        headers.push((self.marker_header.clone(), b"1".to_vec()));
        let mut copy = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let value = String::from_utf8(value).map_err(|_| Decision::HeaderNotUtf8)?;
            copy.push((name, value));
        }
        Ok(copy)
    }

    /// Whether a request is a gRPC call (its `content-type`; gRPC-Web is not).
    pub fn is_grpc(headers: &[(String, Vec<u8>)]) -> bool {
        is_grpc(&Request::new(headers))
    }

    /// `authority` with the suffix on the host part, before any port, as Envoy's own
    /// mirroring does (`api:8080` becomes `api-shadow:8080`).
    pub fn shadow_authority(&self, authority: &[u8]) -> Vec<u8> {
        let suffix = self.authority_suffix.as_bytes();
        if suffix.is_empty() {
            return authority.to_vec();
        }
        let port_at = authority.iter().rposition(|b| *b == b':').filter(|&i| {
            let port = authority.get(i.saturating_add(1)..).unwrap_or_default();
            let host = authority.get(..i).unwrap_or_default();
            // `::1` without brackets has colons but no port.
            !port.is_empty()
                && port.iter().all(u8::is_ascii_digit)
                && (!host.contains(&b':') || host.ends_with(b"]"))
        });
        let (host, port) = match port_at {
            Some(i) => (
                authority.get(..i).unwrap_or_default(),
                authority.get(i..).unwrap_or_default(),
            ),
            None => (authority, &[][..]),
        };
        [host, suffix, port].concat()
    }

    /// The decision on a request and, when it is mirrored, the copy's headers: [`Mirror::decide`]
    /// then [`Mirror::copy_headers`], the calls the stream code makes in this order (with the
    /// run-time checks, rate limit and pending copies, after them). A tool explaining a request
    /// gets the filter's answer from this one call. With a baseline, its copy is this same copy.
    pub fn plan(
        &self,
        headers: &[(String, Vec<u8>)],
        class: ClassId,
        assigned: &[(String, String)],
        class_headers: &[(&str, Option<&[u8]>)],
        draw: impl FnOnce() -> Option<u32>,
    ) -> Result<Vec<(String, String)>, Decision> {
        self.decide(headers, class, assigned, draw)?;
        self.copy_headers(headers.to_vec(), class_headers)
    }
}

fn is_grpc(req: &Request<'_>) -> bool {
    req.values("content-type")
        .next()
        .is_some_and(grpc::is_grpc_content_type)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::compare::{BodyMode, CompareSpec};

    fn mirror() -> Mirror {
        Mirror {
            cluster: "canary".into(),
            authority_suffix: "-shadow".into(),
            marker_header: "x-mirror".into(),
            basis_points: 10_000,
            sample_key: None,
            classes: None,
            include_paths: Vec::new(),
            exclude_paths: Vec::new(),
            methods: Method::IDEMPOTENT.to_vec(),
            idempotency_key_header: None,
            timeout_ms: 1000,
            max_body_bytes: 65536,
            max_in_flight: 256,
            remove_headers: Vec::new(),
            compare: CompareSpec {
                headers: Vec::new(),
                body: BodyMode::Bytes,
                ignore: Vec::new(),
                protobuf_ignore: Vec::new(),
                max_body_bytes: 262_144,
                endpoints: Default::default(),
            },
            baseline: None,
            max_per_second: 0,
            grpc_methods: vec![
                MethodPattern::parse("/shop.v1.Catalog/Get*").unwrap(),
                MethodPattern::parse("/shop.v1.Catalog/ListProducts").unwrap(),
            ],
        }
    }

    fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), b"api.example".to_vec()),
        ];
        h.extend(
            extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        h
    }

    fn decide(
        m: &Mirror,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), Decision> {
        m.decide(&headers(method, path, extra), 0, &[], || Some(0))
    }

    type Extra<'a> = Vec<(&'a str, &'a str)>;
    type Want = Result<(), Decision>;

    #[test]
    fn methods_and_overrides() {
        use Decision::NotIdempotent as No;
        let plain = mirror();
        let mut keyed = mirror();
        keyed.idempotency_key_header = Some("idempotency-key".into());
        let mut only_get = mirror();
        only_get.methods = vec![Method::Get];
        let key = ("idempotency-key", "k1");
        #[rustfmt::skip]
        let cases: Vec<(&Mirror, &str, Extra, Want)> = vec![
            (&plain, "GET", vec![], Ok(())),
            (&plain, "HEAD", vec![], Ok(())),
            (&plain, "OPTIONS", vec![], Ok(())),
            (&plain, "TRACE", vec![], Ok(())),
            (&plain, "PUT", vec![], Ok(())),
            (&plain, "DELETE", vec![], Ok(())),
            (&plain, "POST", vec![], Err(No)),
            (&plain, "PATCH", vec![], Err(No)),
            (&plain, "CONNECT", vec![], Err(No)),
            (&plain, "PURGE", vec![], Err(No)),
            (&plain, "get", vec![], Err(No)),
            (&plain, "", vec![], Err(No)),
            (&only_get, "PUT", vec![], Err(No)),
            (&only_get, "GET", vec![], Ok(())),
            // Overrides: every header, any case, lists, the override must be allowed too.
            (&plain, "GET", vec![("x-http-method-override", "POST")], Err(No)),
            (&plain, "PUT", vec![("x-http-method", "PATCH")], Err(No)),
            (&plain, "GET", vec![("x-method-override", "post")], Err(No)),
            (&plain, "GET", vec![("x-http-method-override", "PUT, POST")], Err(No)),
            (&plain, "GET", vec![("x-http-method-override", "MERGE")], Err(No)),
            (&plain, "GET", vec![("x-http-method-override", "")], Err(No)),
            (&plain, "POST", vec![("x-http-method-override", "GET")], Err(No)),
            (&plain, "GET", vec![("x-http-method-override", "DELETE")], Ok(())),
            (&only_get, "GET", vec![("x-http-method-override", "DELETE")], Err(No)),
            // Upgrades.
            (&plain, "GET", vec![("upgrade", "websocket"), ("connection", "upgrade")], Err(No)),
            (&plain, "CONNECT", vec![(":protocol", "websocket")], Err(No)),
            (&plain, "GET", vec![(":protocol", "websocket")], Err(No)),
            // Idempotency keys are opt-in and must be non-empty.
            (&plain, "POST", vec![key], Err(No)),
            (&keyed, "POST", vec![key], Ok(())),
            (&keyed, "PATCH", vec![key], Ok(())),
            (&keyed, "POST", vec![], Err(No)),
            (&keyed, "POST", vec![("idempotency-key", " ")], Err(No)),
            (&keyed, "GET", vec![key, ("x-http-method-override", "POST")], Ok(())),
            (&keyed, "CONNECT", vec![key], Err(No)),
        ];
        for (m, method, extra, want) in cases {
            assert_eq!(decide(m, method, "/", &extra), want, "{method} {extra:?}");
        }
    }

    #[test]
    fn override_methods_in_any_case() {
        let others = [Method::Post, Method::Patch, Method::Connect];
        for m in Method::IDEMPOTENT.into_iter().chain(others) {
            let name = m.as_str();
            assert_eq!(Method::parse_ignore_case(name.as_bytes()), Some(m));
            let lower = name.to_ascii_lowercase();
            assert_eq!(Method::parse_ignore_case(lower.as_bytes()), Some(m));
            assert_eq!(
                Method::parse_ignore_case(format!("{name}X").as_bytes()),
                None
            );
        }
        for other in ["", "GE", "MERGE", "OPTIONSS", "G\u{c9}T"] {
            assert_eq!(Method::parse_ignore_case(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn decision_order_and_paths() {
        let mut m = mirror();
        m.include_paths = vec!["/api/".into()];
        m.exclude_paths = vec!["/api/logout".into(), "/api/admin/".into()];
        m.classes = Some(vec![1]);
        m.max_body_bytes = 10;
        let cases: Vec<(&str, &str, Extra, ClassId, Want)> = vec![
            ("GET", "/api/balance", vec![], 1, Ok(())),
            ("GET", "/api/balance?x=/api/logout", vec![], 1, Ok(())),
            ("GET", "/api/logout", vec![], 1, Err(Decision::PathExcluded)),
            (
                "GET",
                "/api/logout?next=/",
                vec![],
                1,
                Err(Decision::PathExcluded),
            ),
            (
                "GET",
                "/api/logoutall",
                vec![],
                1,
                Err(Decision::PathExcluded),
            ),
            (
                "GET",
                "/api/admin/users",
                vec![],
                1,
                Err(Decision::PathExcluded),
            ),
            ("GET", "/api", vec![], 1, Err(Decision::PathExcluded)),
            ("GET", "/web/api/x", vec![], 1, Err(Decision::PathExcluded)),
            ("GET", "/api/x", vec![], 0, Err(Decision::ClassExcluded)),
            (
                "GET",
                "/api/x",
                vec![("x-mirror", "1")],
                1,
                Err(Decision::IsMirror),
            ),
            (
                "POST",
                "/api/x",
                vec![("x-mirror", "1")],
                0,
                Err(Decision::IsMirror),
            ),
            (
                "POST",
                "/api/logout",
                vec![],
                0,
                Err(Decision::NotIdempotent),
            ),
            ("GET", "/api/logout", vec![], 0, Err(Decision::PathExcluded)),
            (
                "PUT",
                "/api/x",
                vec![("content-length", "11")],
                1,
                Err(Decision::BodyTooLarge),
            ),
            ("PUT", "/api/x", vec![("content-length", "10")], 1, Ok(())),
        ];
        for (method, path, extra, class, want) in cases {
            let got = m.decide(&headers(method, path, &extra), class, &[], || Some(0));
            assert_eq!(got, want, "{method} {path} {extra:?} class {class}");
        }
    }

    #[test]
    fn sampling() {
        let mut m = mirror();
        m.basis_points = 5000;
        let h = headers("GET", "/", &[]);
        assert_eq!(m.decide(&h, 0, &[], || Some(4999)), Ok(()));
        assert_eq!(
            m.decide(&h, 0, &[], || Some(5000)),
            Err(Decision::NotSampled)
        );
        assert_eq!(m.decide(&h, 0, &[], || None), Err(Decision::NotSampled));
        m.basis_points = 0;
        assert_eq!(m.decide(&h, 0, &[], || Some(0)), Err(Decision::NotSampled));

        // With a key the draw is not used: the same key always gets the same answer, and
        // the answer is the documented bucket of "mirror:<key>".
        m.basis_points = 5000;
        m.sample_key = Some(BucketKey::Cookie("uid".into()));
        let (mut inside, mut outside) = (0, 0);
        for i in 0..200 {
            let uid = format!("user-{i}");
            let h = headers("GET", "/", &[("cookie", &format!("a=b; uid={uid}"))]);
            let want = bucket::bucket_of(b"mirror", uid.as_bytes()) < 5000;
            for draw in [Some(0), Some(9999), None] {
                assert_eq!(m.decide(&h, 0, &[], || draw).is_ok(), want, "{uid}");
            }
            if want {
                inside += 1
            } else {
                outside += 1
            }
        }
        assert!(inside > 70 && outside > 70, "{inside} {outside}");
        // A first-time visitor samples by the id the classifier just assigned.
        let fresh = headers("GET", "/", &[]);
        let assigned = [("uid".to_string(), "user-0".to_string())];
        let want = bucket::bucket_of(b"mirror", b"user-0") < 5000;
        assert_eq!(m.decide(&fresh, 0, &assigned, || None).is_ok(), want);
        // No key at all: the draw decides.
        assert_eq!(m.decide(&fresh, 0, &[], || Some(1)), Ok(()));
        m.sample_key = Some(BucketKey::Header("x-user-id".into()));
        let h = headers("GET", "/", &[("x-user-id", "user-0")]);
        assert_eq!(m.decide(&h, 0, &[], || None).is_ok(), want);
    }

    #[test]
    fn shadow_authority() {
        let mut m = mirror();
        for (authority, want) in [
            ("api.example", "api.example-shadow"),
            ("api.example:8080", "api.example-shadow:8080"),
            ("127.0.0.1:10000", "127.0.0.1-shadow:10000"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("::1", "::1-shadow"),
            ("api:", "api:-shadow"),
            ("", "-shadow"),
        ] {
            assert_eq!(
                String::from_utf8(m.shadow_authority(authority.as_bytes())).unwrap(),
                want
            );
        }
        m.authority_suffix.clear();
        assert_eq!(m.shadow_authority(b"api:80"), b"api:80");
    }

    #[test]
    fn plan_is_decide_then_copy() {
        let m = mirror();
        let class_headers: &[(&str, Option<&[u8]>)] = &[("x-user-class", Some(b"beta"))];
        // (method, extra headers) -> the plan
        type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], Result<usize, Decision>);
        let cases: &[Case] = &[
            ("GET", &[], Ok(5)),
            ("POST", &[], Err(Decision::NotIdempotent)),
            ("GET", &[("x-mirror", b"1")], Err(Decision::IsMirror)),
            ("GET", &[("cookie", b"\xff")], Err(Decision::HeaderNotUtf8)),
        ];
        for (method, extra, want) in cases {
            let h: Vec<(String, Vec<u8>)> = headers(method, "/a", &[])
                .into_iter()
                .chain(extra.iter().map(|(n, v)| (n.to_string(), v.to_vec())))
                .collect();
            let plan = m.plan(&h, 0, &[], class_headers, || Some(0));
            let separate = m
                .decide(&h, 0, &[], || Some(0))
                .and_then(|()| m.copy_headers(h.clone(), class_headers));
            assert_eq!(plan, separate, "{method} {extra:?}");
            assert_eq!(plan.map(|c| c.len()), *want, "{method} {extra:?}");
        }
    }

    #[test]
    fn copy_headers() {
        let mut m = mirror();
        m.remove_headers = vec!["authorization".into()];
        let h = headers(
            "PUT",
            "/a?b=c",
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "5"),
                ("proxy-authorization", "Basic eA=="),
                ("transfer-encoding", "chunked"),
                ("content-length", "3"),
                ("authorization", "Bearer t"),
                ("x-user-class", "spoofed"),
                ("x-mirror", "0"),
                ("accept", "*/*"),
            ],
        );
        let got = m
            .copy_headers(
                h,
                &[
                    ("x-user-class", Some(b"beta".as_slice())),
                    ("x-features", None),
                ],
            )
            .unwrap();
        let want: Vec<(String, String)> = [
            (":method", "PUT"),
            (":path", "/a?b=c"),
            (":authority", "api.example-shadow"),
            ("accept", "*/*"),
            ("x-user-class", "beta"),
            ("x-mirror", "1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn copy_of_headers_that_are_not_utf8() {
        let mut m = mirror();
        m.remove_headers = vec!["authorization".into()];
        let class_headers: &[(&str, Option<&[u8]>)] = &[("x-user-class", Some(b"stable"))];
        // (what, extra request headers as bytes, whether a copy can be made)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], bool);
        let cases: &[Case] = &[
            ("all UTF-8", &[("cookie", b"a=1")], true),
            (
                "UTF-8 beyond ASCII",
                &[("cookie", "a=\u{e9}t\u{e9}".as_bytes())],
                true,
            ),
            (
                "obs-text in a cookie",
                &[("cookie", b"type=\xffinsider")],
                false,
            ),
            (
                "obs-text in a user id",
                &[("x-user-id", b"\xfe\xff")],
                false,
            ),
            (
                "lone continuation byte",
                &[("user-agent", b"Firefox\x80")],
                false,
            ),
            ("truncated sequence", &[("accept", b"\xc3")], false),
            // Replaced by the filter's class before the copy is made.
            ("spoofed class", &[("x-user-class", b"\xffbeta")], true),
            ("removed header", &[("authorization", b"Basic \xff")], true),
            ("hop-by-hop header", &[("keep-alive", b"\xff")], true),
        ];
        for (what, extra, copied) in cases {
            let mut h = headers("GET", "/", &[]);
            h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_vec())));
            let got = m.copy_headers(h, class_headers);
            if *copied {
                let copy = got.unwrap_or_else(|d| panic!("{what}: {d:?}"));
                assert!(
                    copy.contains(&("x-user-class".into(), "stable".into())),
                    "{what}"
                );
            } else {
                assert_eq!(got.err(), Some(Decision::HeaderNotUtf8), "{what}");
            }
        }
    }

    #[test]
    fn grpc_calls() {
        use Decision::{GrpcNotDeclared as Undeclared, NotIdempotent as No};
        let declared = mirror();
        let mut keyed = mirror();
        keyed.idempotency_key_header = Some("idempotency-key".into());
        keyed.grpc_methods.clear();
        let mut excluded = mirror();
        excluded.exclude_paths = vec!["/shop.v1.Catalog/GetSecret".into()];
        let grpc = ("content-type", "application/grpc");
        let key = ("idempotency-key", "k1");
        #[rustfmt::skip]
        let cases: Vec<(&str, &Mirror, &str, &str, Extra, Want)> = vec![
            ("declared by prefix", &declared, "POST", "/shop.v1.Catalog/GetProduct", vec![grpc], Ok(())),
            ("declared in full", &declared, "POST", "/shop.v1.Catalog/ListProducts", vec![grpc], Ok(())),
            ("any codec", &declared, "POST", "/shop.v1.Catalog/GetProduct", vec![("content-type", "application/grpc+proto")], Ok(())),
            ("the prefix itself", &declared, "POST", "/shop.v1.Catalog/Get", vec![grpc], Ok(())),
            ("undeclared method", &declared, "POST", "/shop.v1.Catalog/PlaceOrder", vec![grpc], Err(Undeclared)),
            ("a full name is not a prefix", &declared, "POST", "/shop.v1.Catalog/ListProductsAll", vec![grpc], Err(Undeclared)),
            ("another service", &declared, "POST", "/shop.v2.Catalog/GetProduct", vec![grpc], Err(Undeclared)),
            ("names are case-sensitive", &declared, "POST", "/shop.v1.Catalog/getProduct", vec![grpc], Err(Undeclared)),
            ("a query is no gRPC path", &declared, "POST", "/shop.v1.Catalog/GetProduct?x=1", vec![grpc], Err(Undeclared)),
            ("not a POST", &declared, "GET", "/shop.v1.Catalog/GetProduct", vec![grpc], Err(Undeclared)),
            ("no section: nothing declared", &keyed, "POST", "/shop.v1.Catalog/GetProduct", vec![grpc], Err(Undeclared)),
            ("an idempotency key does not declare a method", &keyed, "POST", "/shop.v1.Catalog/GetProduct", vec![grpc, key], Err(Undeclared)),
            ("paths still apply", &excluded, "POST", "/shop.v1.Catalog/GetSecret", vec![grpc], Err(Decision::PathExcluded)),
            ("a mirror is not mirrored", &declared, "POST", "/shop.v1.Catalog/GetProduct", vec![grpc, ("x-mirror", "1")], Err(Decision::IsMirror)),
            // gRPC-Web is a POST like any other.
            ("grpc-web", &declared, "POST", "/shop.v1.Catalog/GetProduct", vec![("content-type", "application/grpc-web+proto")], Err(No)),
            ("grpc-web with a key", &keyed, "POST", "/shop.v1.Catalog/GetProduct", vec![("content-type", "application/grpc-web"), key], Ok(())),
            ("not gRPC", &declared, "POST", "/shop.v1.Catalog/GetProduct", vec![("content-type", "application/json")], Err(No)),
        ];
        for (what, m, method, path, extra, want) in cases {
            assert_eq!(decide(m, method, path, &extra), want, "{what}");
        }
    }

    #[test]
    fn grpc_copy_headers() {
        let m = mirror();
        let grpc = ("content-type", "application/grpc");
        let te = ("te", "trailers");
        // (what, extra request headers, te and grpc-timeout of the copy)
        #[rustfmt::skip]
        type Copied<'a> = (Option<&'a str>, Option<&'a str>);
        let cases: Vec<(&str, Extra, Copied)> = vec![
            (
                "te kept, timeout added",
                vec![grpc, te],
                (Some("trailers"), Some("1000m")),
            ),
            (
                "timeout within timeout_ms kept",
                vec![grpc, te, ("grpc-timeout", "999m")],
                (Some("trailers"), Some("999m")),
            ),
            (
                "timeout at timeout_ms kept",
                vec![grpc, te, ("grpc-timeout", "1S")],
                (Some("trailers"), Some("1S")),
            ),
            (
                "longer timeout capped",
                vec![grpc, te, ("grpc-timeout", "5S")],
                (Some("trailers"), Some("1000m")),
            ),
            (
                "malformed timeout kept as sent",
                vec![grpc, te, ("grpc-timeout", "soon")],
                (Some("trailers"), Some("soon")),
            ),
            (
                "not gRPC: te is hop-by-hop",
                vec![
                    ("content-type", "application/json"),
                    te,
                    ("grpc-timeout", "5S"),
                ],
                (None, Some("5S")),
            ),
            (
                "grpc-web: te is hop-by-hop",
                vec![("content-type", "application/grpc-web"), te],
                (None, None),
            ),
        ];
        for (what, extra, want) in cases {
            let copy = m
                .copy_headers(headers("POST", "/shop.v1.Catalog/GetProduct", &extra), &[])
                .unwrap();
            let value = |name: &str| {
                let values: Vec<&str> = copy
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                assert!(values.len() <= 1, "{what}: {name} {values:?}");
                values.first().copied()
            };
            assert_eq!((value("te"), value("grpc-timeout")), want, "{what}");
            assert_eq!(
                value("content-type"),
                extra.first().map(|(_, v)| *v),
                "{what}"
            );
        }
    }

    /// The label values are public: dashboards, alerts and the Flagger templates name them.
    #[test]
    fn decision_names() {
        let names: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            names,
            [
                "mirrored",
                "not_idempotent",
                "path_excluded",
                "not_sampled",
                "class_excluded",
                "body_too_large",
                "overloaded",
                "is_mirror",
                "dispatch_failed",
                "header_not_utf8",
                "rate_limited",
                "grpc_not_declared"
            ]
        );
    }
}

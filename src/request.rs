//! The request as classification and mirror sampling read it, and the one way both find a
//! user's id in it (a bucket key).

use std::borrow::Cow;

use crate::cookie;
use crate::query;

/// Every header of a request, in order, as the host gave them (lowercase names, values as
/// bytes). Pseudo-headers such as `:path` are among them.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    headers: &'a [(String, Vec<u8>)],
    /// A header to act as if the client had not sent it (the untrusted class header).
    hidden: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a [(String, Vec<u8>)]) -> Self {
        Request {
            headers,
            hidden: None,
        }
    }

    /// The same request without header `name` (lowercase).
    pub fn hiding(self, name: &'a str) -> Self {
        Request {
            hidden: Some(name),
            ..self
        }
    }

    /// Every value of header `name` (lowercase), in order.
    pub fn values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        let hidden = self.hidden == Some(name);
        self.headers
            .iter()
            .filter(move |(n, _)| !hidden && n.len() == name.len() && n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether header `name` (lowercase) is exactly `value`: sent once with that value, or for
    /// `None` not sent at all.
    pub fn has_exactly(&self, name: &str, value: Option<&[u8]>) -> bool {
        let mut values = self.values(name);
        values.next() == value && values.next().is_none()
    }

    /// The value of cookie `name` across every `cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&'a [u8]> {
        cookie::find(self.values("cookie"), name.as_bytes())
    }

    /// The value of query parameter `name` in `:path`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        let path = self.values(":path").next().unwrap_or_default();
        query::find(path, name.as_bytes())
    }

    /// The id `key` names in this request: the first value of a header, or a cookie's value,
    /// or for a cookie the client did not send (or sent empty) the id the classifier just
    /// `assigned` a first-time visitor (cookie name, id), so a fresh visitor lands where every
    /// later request of theirs will. `None` for a missing or empty id: one shared empty id
    /// would put every anonymous user in the same bucket.
    pub fn bucket_id(&self, key: &BucketKey, assigned: &'a [(String, String)]) -> Option<&'a [u8]> {
        let id = match key {
            BucketKey::Header(name) => self.values(name).next(),
            BucketKey::Cookie(name) => self.cookie(name).filter(|v| !v.is_empty()).or_else(|| {
                assigned
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, id)| id.as_bytes())
            }),
        };
        id.filter(|v| !v.is_empty())
    }
}

/// Where a user's id is read from, for a sticky bucket: a cookie or a header (lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketKey {
    Cookie(String),
    Header(String),
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn bucket_ids() {
        let cookie = BucketKey::Cookie("uid".into());
        let header = BucketKey::Header("x-user-id".into());
        let fresh = vec![("uid".to_string(), "fresh".to_string())];
        let other = vec![("sid".to_string(), "fresh".to_string())];
        let empty = vec![("uid".to_string(), String::new())];
        type Case<'a> = (
            &'a str,
            &'a BucketKey,
            Vec<(&'a str, &'a str)>,
            &'a [(String, String)],
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "cookie",
                &cookie,
                vec![("cookie", "a=1; uid=42")],
                &[],
                Some("42"),
            ),
            (
                "cookie wins over assigned",
                &cookie,
                vec![("cookie", "uid=42")],
                &fresh,
                Some("42"),
            ),
            (
                "no cookie: assigned",
                &cookie,
                vec![],
                &fresh,
                Some("fresh"),
            ),
            (
                "empty cookie: assigned",
                &cookie,
                vec![("cookie", "uid=")],
                &fresh,
                Some("fresh"),
            ),
            ("assigned to another cookie", &cookie, vec![], &other, None),
            (
                "empty cookie, nothing assigned",
                &cookie,
                vec![("cookie", "uid=")],
                &[],
                None,
            ),
            ("empty id assigned", &cookie, vec![], &empty, None),
            (
                "a header named like the cookie",
                &cookie,
                vec![("uid", "42")],
                &[],
                None,
            ),
            (
                "header",
                &header,
                vec![("x-user-id", "u1"), ("x-user-id", "u2")],
                &[],
                Some("u1"),
            ),
            (
                "empty header",
                &header,
                vec![("x-user-id", ""), ("x-user-id", "u2")],
                &[],
                None,
            ),
            ("header ignores assigned", &header, vec![], &fresh, None),
        ];
        for (what, key, list, assigned, want) in cases {
            let h = headers(&list);
            let got = Request::new(&h).bucket_id(key, assigned);
            assert_eq!(got, want.map(str::as_bytes), "{what}");
        }
    }

    #[test]
    fn hidden_header_is_not_seen() {
        let h = headers(&[
            ("x-user-class", "beta"),
            ("cookie", "uid=1"),
            (":path", "/?q=a%20b"),
        ]);
        let req = Request::new(&h).hiding("x-user-class");
        assert_eq!(req.values("x-user-class").count(), 0);
        assert_eq!(Request::new(&h).values("x-user-class").count(), 1);
        let key = BucketKey::Header("x-user-class".into());
        assert_eq!(req.bucket_id(&key, &[]), None);
        assert_eq!(req.cookie("uid"), Some(&b"1"[..]));
        assert_eq!(req.query("q").as_deref(), Some(&b"a b"[..]));
        assert_eq!(req.query("p"), None);
    }

    #[test]
    fn has_exactly() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            (vec![("x-c", "beta")], Some("beta"), true),
            (vec![("x-c", "beta")], Some("stable"), false),
            (vec![("x-c", "beta"), ("x-c", "beta")], Some("beta"), false),
            (vec![("x-c", "")], Some(""), true),
            (vec![], Some("beta"), false),
            (vec![], None, true),
            (vec![("x-c", "")], None, false),
            (vec![("x-d", "beta")], Some("beta"), false),
        ];
        for (list, value, want) in cases {
            let h = headers(&list);
            let got = Request::new(&h).has_exactly("x-c", value.map(str::as_bytes));
            assert_eq!(got, want, "{list:?} {value:?}");
        }
    }
}

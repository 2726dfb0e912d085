//! Undoing a response's `Content-Encoding` before its body is compared, so two servers that
//! compress the same answer differently (another level, another library, one of them not at
//! all) are compared on what they mean, not on their bytes.
//!
//! Only what servers commonly send is decoded: gzip and deflate. The decoded size is bounded
//! by the caller's limit, not by the compressed size: a few kilobytes of gzip can expand to
//! gigabytes, and a filter holding that in a sidecar would take the whole proxy down.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};

use crc::{Crc, Table, CRC_32_ISO_HDLC};
use flate2::bufread::{DeflateDecoder, ZlibDecoder};

/// gzip's CRC-32 (RFC 1952 §8), from a 1 KiB table. flate2's own gzip reader checks it with
/// crc32fast, whose 16 KiB table alone cost more of the module's size budget than the whole
/// gzip framing below: so the framing is read here, around flate2's raw inflater.
const GZIP_CRC: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISO_HDLC);

/// Decoded output is read this much at a time, so a bomb stops within one chunk of the limit.
const CHUNK: usize = 8 * 1024;

/// An unsupported `Content-Encoding` is quoted in a log line; a huge header must not flood it.
const MAX_NAME_BYTES: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not one coding decoded here: `br`, `zstd`, a list such as `gzip, br`. Holds the value
    /// as sent (trimmed, lossily UTF-8, cut to 40 bytes).
    Unsupported(String),
    /// The decoded body is longer than `limit` bytes.
    TooLarge { limit: usize },
    /// Not a valid stream of its coding: a bad header or checksum, cut short, or garbage.
    Corrupt(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(name) => write!(
                f,
                "content-encoding {name:?} is not decoded (only gzip, x-gzip, deflate, identity)"
            ),
            DecodeError::TooLarge { limit } => {
                write!(f, "the decoded body is over {limit} bytes")
            }
            DecodeError::Corrupt(reason) => write!(f, "the body does not decode: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// `body` decoded per its `Content-Encoding` header value, at most `limit` bytes of it.
///
/// The codings are matched case-insensitively, with surrounding whitespace trimmed: empty or
/// `identity` returns the body as it is (the caller already holds it, so `limit` does not
/// apply); `gzip` or `x-gzip` (RFC 9110 §8.4.1.3; every member of a multi-member stream, as
/// `gunzip` reads them); `deflate`, which RFC 9110 §8.4.1.2 defines as a zlib stream but
/// which some servers send as raw deflate, so a body without a zlib header is read as raw.
/// An empty body is empty in any of these: a `HEAD` or `304` answer keeps the header of the
/// body it does not carry.
pub fn decode<'a>(
    content_encoding: &[u8],
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let coding = content_encoding.trim_ascii();
    let is = |name: &str| coding.eq_ignore_ascii_case(name.as_bytes());
    if coding.is_empty() || is("identity") {
        return Ok(Cow::Borrowed(body));
    }
    let gzip = is("gzip") || is("x-gzip");
    if !gzip && !is("deflate") {
        return Err(DecodeError::Unsupported(quoted(coding)));
    }
    if body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    let mut decoded = Vec::new();
    if gzip {
        gunzip(body, &mut decoded, limit)?;
    } else if has_zlib_header(body) {
        read_bounded(ZlibDecoder::new(body), &mut decoded, limit)?;
    } else {
        read_bounded(DeflateDecoder::new(body), &mut decoded, limit)?;
    }
    Ok(Cow::Owned(decoded))
}

fn corrupt(why: &str) -> DecodeError {
    DecodeError::Corrupt(why.to_string())
}

/// Every member of a gzip stream (RFC 1952 §2.2), as `gunzip` reads them: each one's header,
/// its deflate data, and its trailer's CRC-32 and length checked against what it decoded to.
fn gunzip(body: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let mut rest = body;
    while !rest.is_empty() {
        let data = rest
            .get(gzip_header_len(rest)?..)
            .ok_or_else(|| corrupt("gzip header cut short"))?;
        let start = out.len();
        let mut inflater = DeflateDecoder::new(data);
        read_bounded(&mut inflater, out, limit)?;
        let used = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let trailer = data
            .get(used..)
            .and_then(|t| t.get(..8))
            .ok_or_else(|| corrupt("gzip trailer cut short"))?;
        let word = |at: usize| {
            let bytes: Option<[u8; 4]> = trailer.get(at..at.saturating_add(4))?.try_into().ok();
            bytes.map(u32::from_le_bytes)
        };
        let member = out.get(start..).unwrap_or_default();
        if word(0) != Some(GZIP_CRC.checksum(member)) {
            return Err(corrupt("gzip CRC-32 does not match the decoded data"));
        }
        // ISIZE is the length modulo 2^32.
        if word(4) != Some(member.len() as u32) {
            return Err(corrupt("gzip length does not match the decoded data"));
        }
        rest = data.get(used.saturating_add(8)..).unwrap_or_default();
    }
    Ok(())
}

/// The length of the gzip member header at the start of `member` (RFC 1952 §2.3): magic,
/// method deflate, flags without reserved bits, then the optional extra field, file name,
/// comment, and header CRC (checked) the flags announce.
fn gzip_header_len(member: &[u8]) -> Result<usize, DecodeError> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    const RESERVED: u8 = 0xe0;
    let short = || corrupt("gzip header cut short");
    match member.get(..4) {
        Some([0x1f, 0x8b, 8, flags]) if flags & RESERVED == 0 => {}
        Some(_) => return Err(corrupt("invalid gzip header")),
        None => return Err(short()),
    }
    let flags = member.get(3).copied().unwrap_or_default();
    let mut at: usize = 10;
    if flags & FEXTRA != 0 {
        let len = member.get(at..at.saturating_add(2)).ok_or_else(short)?;
        let len = len
            .iter()
            .rev()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        at = at.saturating_add(2).saturating_add(len);
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let text = member.get(at..).ok_or_else(short)?;
            let end = text.iter().position(|b| *b == 0).ok_or_else(short)?;
            at = at.saturating_add(end).saturating_add(1);
        }
    }
    if flags & FHCRC != 0 {
        let header = member.get(..at).ok_or_else(short)?;
        let stored = member.get(at..at.saturating_add(2)).ok_or_else(short)?;
        // The low 16 bits of the header's CRC-32.
        if stored != &GZIP_CRC.checksum(header).to_le_bytes()[..2] {
            return Err(corrupt("gzip header CRC does not match"));
        }
        at = at.saturating_add(2);
    }
    if at > member.len() {
        return Err(short());
    }
    Ok(at)
}

/// RFC 1950's two header bytes: method 8 (deflate), a window of at most 32 KiB, and a check
/// making them a multiple of 31. Raw deflate cannot start that way in practice: its low
/// three bits 000 would be a stored, non-final block, whose other five bits are padding that
/// encoders write as zeros, while the zlib method needs bit 3 set.
fn has_zlib_header(body: &[u8]) -> bool {
    let (Some(&cmf), Some(&flg)) = (body.first(), body.get(1)) else {
        return false;
    };
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && u16::from_be_bytes([cmf, flg]) % 31 == 0
}

/// Reads `reader` to its end into a buffer that never grows past `limit` bytes, failing as
/// soon as the output would: the allocation stays within `limit`, whatever the input claims.
fn read_bounded(mut reader: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        let data = chunk.get(..n).unwrap_or_default();
        let len = out.len().saturating_add(data.len());
        if len > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if len > out.capacity() {
            // Doubling, as Vec would, but capped at the limit rather than past it.
            let capacity = out
                .capacity()
                .saturating_mul(2)
                .max(CHUNK)
                .min(limit)
                .max(len);
            out.try_reserve_exact(capacity.saturating_sub(out.len()))
                .map_err(|_| DecodeError::TooLarge { limit })?;
        }
        out.extend_from_slice(data);
    }
}

fn quoted(coding: &[u8]) -> String {
    let text = String::from_utf8_lossy(coding);
    let mut end = text.len().min(MAX_NAME_BYTES);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    text.get(..end).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    /// `{"id":42,"name":"café"}\n` as Python's gzip module writes it (with the file name
    /// `body.json` in the header, mtime 0), not as flate2 does, so the reader is checked
    /// against another implementation.
    const PYTHON_GZIP: [u8; 55] = [
        0x1f, 0x8b, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0x62, 0x6f, 0x64, 0x79, 0x2e,
        0x6a, 0x73, 0x6f, 0x6e, 0x00, 0xab, 0x56, 0xca, 0x4c, 0x51, 0xb2, 0x32, 0x31, 0xd2, 0x51,
        0xca, 0x4b, 0xcc, 0x4d, 0x55, 0xb2, 0x52, 0x4a, 0x4e, 0x4c, 0x3b, 0xbc, 0x52, 0xa9, 0x96,
        0x0b, 0x00, 0x8e, 0x69, 0x19, 0x61, 0x19, 0x00, 0x00, 0x00,
    ];
    const PYTHON_TEXT: &[u8] = "{\"id\":42,\"name\":\"café\"}\n".as_bytes();

    /// `{"id":42}` as raw deflate from Python's zlib (wbits -15), as some servers send
    /// `Content-Encoding: deflate`.
    const PYTHON_RAW_DEFLATE: [u8; 11] = [
        0xab, 0x56, 0xca, 0x4c, 0x51, 0xb2, 0x32, 0x31, 0xaa, 0x05, 0x00,
    ];

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A body of some variety, long enough to take several chunks.
    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"{\"id\":1234,\"name\":\"x\"},"[i % 23])
            .collect()
    }

    #[test]
    fn decodes() {
        let json = br#"{"a":[1,2,3],"b":"text"}"#.to_vec();
        let big = text(100_000);
        let two_members = [gzip(b"first, "), gzip(b"second")].concat();
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("", json.clone(), json.clone()),
            ("identity", json.clone(), json.clone()),
            (" Identity\t", json.clone(), json.clone()),
            ("gzip", gzip(&json), json.clone()),
            ("GZIP", gzip(&json), json.clone()),
            ("x-gzip", gzip(&json), json.clone()),
            (" gzip ", gzip(&big), big.clone()),
            ("gzip", PYTHON_GZIP.to_vec(), PYTHON_TEXT.to_vec()),
            ("gzip", two_members, b"first, second".to_vec()),
            ("gzip", gzip(b""), Vec::new()),
            ("deflate", zlib(&json), json.clone()),
            ("Deflate", zlib(&big), big.clone()),
            ("deflate", raw_deflate(&json), json.clone()),
            ("deflate", raw_deflate(&big), big.clone()),
            (
                "deflate",
                PYTHON_RAW_DEFLATE.to_vec(),
                br#"{"id":42}"#.to_vec(),
            ),
            // Nothing to decode: a HEAD or 304 answer keeps the header.
            ("gzip", Vec::new(), Vec::new()),
            ("deflate", Vec::new(), Vec::new()),
        ];
        for (coding, body, want) in cases {
            let got = decode(coding.as_bytes(), &body, 1 << 20);
            assert_eq!(got.as_deref(), Ok(&want[..]), "{coding:?}");
        }
    }

    #[test]
    fn identity_is_not_copied() {
        let body = b"as is";
        for coding in ["", "identity"] {
            let got = decode(coding.as_bytes(), body, 0).unwrap();
            assert!(matches!(got, Cow::Borrowed(b) if std::ptr::eq(b, &body[..])));
        }
    }

    #[test]
    fn unsupported() {
        let euros = "€".repeat(20);
        let cases: &[(&[u8], &str)] = &[
            (b"br", "br"),
            (b"zstd", "zstd"),
            (b"compress", "compress"),
            (b"gzip, br", "gzip, br"),
            (b"gzip,gzip", "gzip,gzip"),
            (b"gzip;q=1", "gzip;q=1"),
            (b"  gzipp ", "gzipp"),
            (b"\xffgzip", "\u{fffd}gzip"),
            (&[b'a'; 100], "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            // Cut at a character boundary: 13 three-byte characters are 39 bytes.
            (euros.as_bytes(), "€€€€€€€€€€€€€"),
        ];
        for (coding, want) in cases {
            for body in [&b""[..], &gzip(b"x")] {
                assert_eq!(
                    decode(coding, body, 1024),
                    Err(DecodeError::Unsupported(want.to_string())),
                    "{coding:?}"
                );
            }
        }
        assert_eq!(
            DecodeError::Unsupported("br".into()).to_string(),
            r#"content-encoding "br" is not decoded (only gzip, x-gzip, deflate, identity)"#
        );
    }

    #[test]
    fn limit() {
        let body = text(50_000);
        let encoded = [
            ("gzip", gzip(&body)),
            ("deflate", zlib(&body)),
            ("deflate", raw_deflate(&body)),
        ];
        for (coding, data) in &encoded {
            let coding = coding.as_bytes();
            assert_eq!(decode(coding, data, 50_000).as_deref(), Ok(&body[..]));
            assert_eq!(decode(coding, data, usize::MAX).as_deref(), Ok(&body[..]));
            for limit in [49_999, CHUNK, 0] {
                assert_eq!(
                    decode(coding, data, limit),
                    Err(DecodeError::TooLarge { limit }),
                    "{limit}"
                );
            }
        }
        assert_eq!(
            DecodeError::TooLarge { limit: 65536 }.to_string(),
            "the decoded body is over 65536 bytes"
        );
    }

    /// 10 MB of zeros is about 10 KB of gzip: refused without holding more than the limit.
    #[test]
    fn bomb() {
        let zeros = vec![0u8; 10 << 20];
        let limit = 64 << 10;
        for (coding, data) in [("gzip", gzip(&zeros)), ("deflate", zlib(&zeros))] {
            assert!(data.len() < 20_000, "{}", data.len());
            assert_eq!(
                decode(coding.as_bytes(), &data, limit),
                Err(DecodeError::TooLarge { limit })
            );
        }
        // What it holds at most: the buffer grows to the limit, never past it.
        let mut kept = Vec::new();
        gunzip(&gzip(&zeros[..limit]), &mut kept, limit).unwrap();
        assert_eq!(kept.len(), limit);
        assert!(kept.capacity() <= limit, "{}", kept.capacity());
    }

    /// The gzip framing read here, against headers flate2's encoder and Python's wrote, and
    /// hand-made ones with every optional field.
    #[test]
    fn gzip_framing() {
        let body = b"framed";
        let plain = gzip(body);
        let with_fields = {
            let mut e = flate2::GzBuilder::new()
                .filename("a.json")
                .comment("made by a test")
                .extra(vec![1, 2, 3, 4])
                .write(Vec::new(), Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        };
        // The header of `plain` with FHCRC set and its CRC-16 after it.
        let with_header_crc = {
            let mut header = plain[..10].to_vec();
            header[3] |= 0x02;
            let crc = GZIP_CRC.checksum(&header).to_le_bytes();
            [&header[..], &crc[..2], &plain[10..]].concat()
        };
        let mut bad_header_crc = with_header_crc.clone();
        bad_header_crc[10] ^= 1;
        let mut bad_crc = plain.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut bad_len = plain.clone();
        bad_len[n - 4] ^= 1;
        let mut reserved = plain.clone();
        reserved[3] |= 0x20;
        type Case<'a> = (&'a str, Vec<u8>, Result<&'a [u8], &'a str>);
        let cases: Vec<Case> = vec![
            ("plain", plain.clone(), Ok(body)),
            ("name, comment, extra", with_fields, Ok(body)),
            ("header crc", with_header_crc, Ok(body)),
            ("python", PYTHON_GZIP.to_vec(), Ok(PYTHON_TEXT)),
            (
                "two members",
                [plain.clone(), plain.clone()].concat(),
                Ok(b"framedframed"),
            ),
            (
                "bad header crc",
                bad_header_crc,
                Err("gzip header CRC does not match"),
            ),
            (
                "bad crc",
                bad_crc,
                Err("gzip CRC-32 does not match the decoded data"),
            ),
            (
                "bad length",
                bad_len,
                Err("gzip length does not match the decoded data"),
            ),
            ("reserved flag", reserved, Err("invalid gzip header")),
            (
                "garbage after a member",
                [&plain[..], b"junk"].concat(),
                Err("invalid gzip header"),
            ),
            (
                "no trailer",
                plain[..n - 8].to_vec(),
                Err("gzip trailer cut short"),
            ),
            (
                "header only",
                plain[..6].to_vec(),
                Err("gzip header cut short"),
            ),
        ];
        for (what, data, want) in cases {
            let got = decode(b"gzip", &data, 1 << 20);
            match want {
                Ok(text) => assert_eq!(got.as_deref(), Ok(text), "{what}"),
                Err(why) => assert_eq!(got, Err(DecodeError::Corrupt(why.into())), "{what}"),
            }
        }
    }

    #[test]
    fn corrupt() {
        let body = text(5_000);
        let gz = gzip(&body);
        let zl = zlib(&body);
        let raw = raw_deflate(&body);
        let mut bad_crc = gz.clone();
        let crc = bad_crc.len() - 8;
        bad_crc[crc] ^= 1;
        let mut bad_adler = zl.clone();
        let last = bad_adler.len() - 1;
        bad_adler[last] ^= 1;
        let trailing_garbage = [&gz[..], b"garbage"].concat();
        let cases: Vec<(&str, &[u8])> = vec![
            ("gzip", &gz[..gz.len() - 4]),
            ("gzip", &gz[..gz.len() / 2]),
            ("gzip", &gz[..5]),
            ("gzip", &bad_crc),
            ("gzip", b"not gzip at all"),
            ("gzip", &zl),
            // A second member that is not one.
            ("gzip", &trailing_garbage),
            ("deflate", &zl[..zl.len() / 2]),
            ("deflate", &bad_adler),
            ("deflate", &raw[..raw.len() / 2]),
            ("deflate", &[0xff; 32]),
            ("deflate", b"x"),
        ];
        for (i, (coding, data)) in cases.iter().enumerate() {
            let got = decode(coding.as_bytes(), data, 1 << 20);
            assert!(
                matches!(got, Err(DecodeError::Corrupt(_))),
                "case {i}: {got:?}"
            );
        }
        assert_eq!(
            DecodeError::Corrupt("incomplete deflate stream".into()).to_string(),
            "the body does not decode: incomplete deflate stream"
        );
    }

    #[test]
    fn zlib_header() {
        let cases: &[(&[u8], bool)] = &[
            (&[0x78, 0x9c], true),
            (&[0x78, 0x01], true),
            (&[0x78, 0xda], true),
            (&[0x08, 0x1d], true),
            (&[0x78, 0x9d], false),
            (&[0x88, 0x98], false),
            (&[0x79, 0x9c], false),
            (&[0x78], false),
            (&[], false),
            (&PYTHON_RAW_DEFLATE, false),
        ];
        for (bytes, want) in cases {
            assert_eq!(has_zlib_header(bytes), *want, "{bytes:x?}");
        }
    }
}

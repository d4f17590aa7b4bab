//! `list`: the whole set of created ConfigMaps, unpaginated and in `limit=500` pages, with
//! `resourceVersion` unset (a consistent read) and `=0` (any recent state) — latency of one
//! complete listing and the bytes it carried; every listing must return every object.

use std::time::Instant;

use hyper::Method;
use serde::Deserialize;

use super::Ctx;
use crate::client::Conn;
use crate::error::BenchError;
use crate::report::CaseResult;
use crate::stats::Summary;

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    metadata: ItemMeta,
}

#[derive(Deserialize)]
struct ItemMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

pub async fn run(ctx: &mut Ctx) -> Result<(), BenchError> {
    ctx.ensure_seeded().await?;
    let mut conn = Conn::open(&ctx.ep).await?;
    let base = ctx.configmaps();
    let page = ctx.opts.list_page.max(1);
    let paged_unset = format!("limit={page} rv=unset");
    let paged_zero = format!("limit={page} rv=0");
    let variants: [(&str, Option<usize>, Option<&str>); 4] = [
        ("all rv=unset", None, None),
        ("all rv=0", None, Some("0")),
        (&paged_unset, Some(page), None),
        (&paged_zero, Some(page), Some("0")),
    ];
    for (name, limit, rv) in variants {
        let mut lat = Vec::with_capacity(ctx.opts.list_runs);
        let mut bytes = 0usize;
        let mut pages = 0usize;
        let mut short = Vec::new();
        for _ in 0..ctx.opts.list_runs.max(1) {
            let mut items = 0usize;
            let mut token: Option<String> = None;
            let t = Instant::now();
            let mut bodies = Vec::new();
            loop {
                let mut query = Vec::new();
                if let Some(l) = limit {
                    query.push(format!("limit={l}"));
                }
                if let Some(rv) = rv {
                    query.push(format!("resourceVersion={rv}"));
                }
                if let Some(tok) = &token {
                    query.push(format!("continue={}", urlencode(tok)));
                }
                let path = if query.is_empty() {
                    base.clone()
                } else {
                    format!("{base}?{}", query.join("&"))
                };
                let body = conn.get(&path).await?.ok(&Method::GET, &path)?;
                // Only the continue token is read inside the timed loop; items are counted after.
                token = match limit {
                    Some(_) => continue_token(&body)?,
                    None => None,
                };
                bodies.push(body);
                if token.is_none() {
                    break;
                }
            }
            lat.push(t.elapsed());
            for body in &bodies {
                bytes += body.len();
                pages += 1;
                let page: ListPage = serde_json::from_slice(body)
                    .map_err(|e| BenchError::Http(format!("list body: {e}")))?;
                items += page
                    .items
                    .iter()
                    .filter(|i| i.metadata.name.starts_with("bench-"))
                    .count();
            }
            if items != ctx.seeded {
                short.push(items);
            }
        }
        let runs = lat.len();
        let case = CaseResult::new("list", name, runs as u64)
            .latency(Summary::of(lat))
            .figure("bytes", (bytes / runs) as f64)
            .figure("pages", (pages / runs) as f64)
            .figure("items", ctx.seeded as f64);
        ctx.record(case);
        let detail = if short.is_empty() {
            format!("every listing returned all {} objects", ctx.seeded)
        } else {
            format!(
                "expected {} objects, listings returned {short:?}",
                ctx.seeded
            )
        };
        ctx.check("list", name, short.is_empty(), detail);
    }
    Ok(())
}

/// The `metadata.continue` of a list body. Servers write `metadata` before `items`, so
/// only the head is parsed; the items are not scanned inside the timed loop.
fn continue_token(body: &[u8]) -> Result<Option<String>, BenchError> {
    const KEY: &[u8] = b"\"continue\":\"";
    let head = match find(body, b"\"items\":") {
        Some(at) => &body[..at],
        None => body,
    };
    if let Some(at) = find(head, KEY) {
        let rest = &head[at + KEY.len()..];
        if let Some(end) = rest.iter().position(|b| *b == b'"') {
            let tok = String::from_utf8_lossy(&rest[..end]).into_owned();
            return Ok(Some(tok).filter(|t| !t.is_empty()));
        }
    }
    #[derive(Deserialize)]
    struct OnlyMeta {
        #[serde(default)]
        metadata: ListMeta,
    }
    if find(head, b"\"continue\"").is_none() && head.len() < body.len() {
        return Ok(None);
    }
    let m: OnlyMeta =
        serde_json::from_slice(body).map_err(|e| BenchError::Http(format!("list body: {e}")))?;
    Ok(m.metadata.continue_.filter(|c| !c.is_empty()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_is_read_from_the_head() {
        let body = br#"{"kind":"ConfigMapList","metadata":{"resourceVersion":"5","continue":"abc="},"items":[{"metadata":{"name":"x","annotations":{"continue":"no"}}}]}"#;
        assert_eq!(continue_token(body).unwrap().as_deref(), Some("abc="));
        let last =
            br#"{"metadata":{"resourceVersion":"5"},"items":[{"data":{"\"continue\":\"":"x"}}]}"#;
        assert_eq!(continue_token(last).unwrap(), None);
        let spaced = br#"{"metadata": {"continue": "t1"}, "items": []}"#;
        assert_eq!(continue_token(spaced).unwrap().as_deref(), Some("t1"));
        assert_eq!(urlencode("a+b/="), "a%2Bb%2F%3D");
    }
}

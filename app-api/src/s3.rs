//! An S3-compatible object store client (AWS S3, MinIO, R2, …): path-style URLs
//! `{endpoint}/{bucket}/{key}`, requests signed with AWS Signature Version 4 (HMAC-SHA256 via
//! ring), and the four operations storage needs: put, get (streamed), delete and ListObjectsV2.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use ring::{digest, hmac};
use secrecy::{ExposeSecret, SecretString};

/// Connection settings.
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region for signing (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: SecretString,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    config: S3Config,
    host: String,
    http: reqwest::Client,
}

/// An object listed by ListObjectsV2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Last modified, as the server wrote it (ISO 8601).
    pub last_modified: String,
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// URI-encode as SigV4 wants: unreserved characters kept, `/` kept in paths.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parts of a request that are signed.
#[derive(Debug)]
pub struct Signable<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The encoded path, starting with `/`.
    pub path: &'a str,
    /// Query parameters (unencoded).
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides the three standard ones, lowercase names.
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

/// The `Authorization` header value for `request` at `amz_date` (`YYYYMMDD'T'HHMMSS'Z'`).
pub fn authorization(
    access_key: &str,
    secret_key: &str,
    region: &str,
    host: &str,
    amz_date: &str,
    request: &Signable<'_>,
) -> String {
    let date = &amz_date[..8];
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.to_owned()),
        (
            "x-amz-content-sha256".into(),
            request.payload_hash.to_owned(),
        ),
        ("x-amz-date".into(), amz_date.to_owned()),
    ];
    headers.extend(
        request
            .extra_headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.trim().to_owned())),
    );
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method, request.path, request.payload_hash
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date);
    let k_region = hmac_sha256(&k_date, region);
    let k_service = hmac_sha256(&k_region, "s3");
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let signature = hex::encode(hmac_sha256(&k_signing, &string_to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// Values of `<tag>…</tag>` inside `xml`, in order (keys here are plain: no entities to undo
/// beyond the five XML ones).
fn tag_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl S3Store {
    /// A client for `config`.
    pub fn new(config: S3Config) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.endpoint)?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "S3_ENDPOINT must be http(s)"
        );
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => anyhow::bail!("S3_ENDPOINT has no host"),
        };
        anyhow::ensure!(
            !config.bucket.is_empty()
                && config.bucket.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.')),
            "S3_BUCKET is not a valid bucket name"
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self { config, host, http })
    }

    fn path(&self, key: &str) -> String {
        format!("/{}/{}", self.config.bucket, uri_encode(key, true))
    }

    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        payload_hash: &str,
    ) -> reqwest::RequestBuilder {
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let authorization = authorization(
            &self.config.access_key,
            self.config.secret_key.expose_secret(),
            &self.config.region,
            &self.host,
            &amz_date,
            &Signable {
                method: method.as_str(),
                path,
                query,
                extra_headers: &[],
                payload_hash,
            },
        );
        let mut url = format!("{}{path}", self.config.endpoint.trim_end_matches('/'));
        if !query.is_empty() {
            let mut pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
                .collect();
            pairs.sort();
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        self.http
            .request(method, url)
            .header("x-amz-date", amz_date)
            .header("x-amz-content-sha256", payload_hash)
            .header("authorization", authorization)
    }

    /// Store `bytes` at `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        let hash = sha256_hex(&bytes);
        let response = self
            .signed(reqwest::Method::PUT, &self.path(key), &[], &hash)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "S3 PUT failed: HTTP {}",
            response.status()
        );
        Ok(())
    }

    /// Stream the object at `key`: `None` when it does not exist.
    pub async fn get(
        &self,
        key: &str,
    ) -> anyhow::Result<Option<(u64, BoxStream<'static, std::io::Result<axum::body::Bytes>>)>> {
        let response = self
            .signed(reqwest::Method::GET, &self.path(key), &[], EMPTY_SHA256)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        anyhow::ensure!(
            response.status().is_success(),
            "S3 GET failed: HTTP {}",
            response.status()
        );
        let size = response.content_length().unwrap_or(0);
        let stream = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .boxed();
        Ok(Some((size, stream)))
    }

    /// Delete the object at `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let response = self
            .signed(reqwest::Method::DELETE, &self.path(key), &[], EMPTY_SHA256)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND,
            "S3 DELETE failed: HTTP {}",
            response.status()
        );
        Ok(())
    }

    /// Every object (ListObjectsV2, following continuation tokens).
    pub async fn list(&self) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let path = format!("/{}", self.config.bucket);
        for _ in 0..10_000 {
            let mut query = vec![("list-type", "2")];
            if let Some(token) = &token {
                query.push(("continuation-token", token.as_str()));
            }
            let response = self
                .signed(reqwest::Method::GET, &path, &query, EMPTY_SHA256)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "S3 LIST failed: HTTP {}",
                response.status()
            );
            let xml = response.text().await?;
            for contents in tag_values(&xml, "Contents") {
                let key = tag_values(contents, "Key").first().map(|k| unescape(k));
                let modified = tag_values(contents, "LastModified")
                    .first()
                    .map(|m| (*m).to_owned());
                if let (Some(key), Some(last_modified)) = (key, modified) {
                    out.push(Listed { key, last_modified });
                }
            }
            let truncated = tag_values(&xml, "IsTruncated").first() == Some(&"true");
            token = tag_values(&xml, "NextContinuationToken")
                .first()
                .map(|t| unescape(t));
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
        anyhow::bail!("S3 listing did not end")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GET example of AWS's Signature Version 4 documentation for S3 ("Example: GET
    /// Object", examplebucket, 20130524T000000Z).
    #[test]
    fn signatures_match_the_published_aws_example() {
        let header = authorization(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "examplebucket.s3.amazonaws.com",
            "20130524T000000Z",
            &Signable {
                method: "GET",
                path: "/test.txt",
                query: &[],
                extra_headers: &[("range", "bytes=0-9")],
                payload_hash: EMPTY_SHA256,
            },
        );
        assert_eq!(
            header,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn listings_are_parsed() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a/b.png</Key>\
                   <LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents><Contents><Key>x&amp;y</Key>\
                   <LastModified>2026-01-02T00:00:00.000Z</LastModified></Contents>\
                   <NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let contents = tag_values(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(unescape(tag_values(contents[1], "Key")[0]), "x&y");
        assert_eq!(tag_values(xml, "NextContinuationToken"), ["t1"]);
        assert_eq!(uri_encode("a b/c", true), "a%20b/c");
    }
}

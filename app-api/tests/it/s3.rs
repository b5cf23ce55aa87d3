//! The S3-compatible backend against a loopback stub that checks every request's SigV4 signature
//! and payload hash, stores objects in memory and answers ListObjectsV2 in pages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::json;

use crate::support::TestApi;

const ACCESS: &str = "AKIDVELROTEST";
const SECRET: &str = "velro-test-secret-key";

/// key → (bytes, last modified RFC 3339)
type Objects = Arc<Mutex<BTreeMap<String, (Vec<u8>, String)>>>;

#[derive(Clone, Default)]
struct Bucket {
    objects: Objects,
    bad_signatures: Arc<Mutex<u32>>,
}

fn signature_ok(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let payload = header("x-amz-content-sha256");
    if payload != hex::encode(ring::digest::digest(&ring::digest::SHA256, body)) {
        return false;
    }
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.replace("%2F", "/").replace("%3D", "="))
        })
        .collect();
    let query_refs: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = velro_api::s3::authorization(
        ACCESS,
        SECRET,
        "us-east-1",
        header("host"),
        header("x-amz-date"),
        &velro_api::s3::Signable {
            method: method.as_str(),
            path: uri.path(),
            query: &query_refs,
            extra_headers: &[],
            payload_hash: payload,
        },
    );
    header("authorization") == expected
}

async fn handle(
    State(bucket): State<Bucket>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !signature_ok(&method, &uri, &headers, &body) {
        *bucket.bad_signatures.lock().unwrap() += 1;
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>SignatureDoesNotMatch</Code></Error>",
        )
            .into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let (name, key) = path.split_once('/').unwrap_or((path, ""));
    assert_eq!(name, "media-test");
    let mut objects = bucket.objects.lock().unwrap();
    match (method, key) {
        (Method::PUT, key) => {
            objects.insert(
                key.to_owned(),
                (body.to_vec(), chrono::Utc::now().to_rfc3339()),
            );
            StatusCode::OK.into_response()
        }
        (Method::GET, "") => {
            // ListObjectsV2, two keys per page.
            let start: usize = uri
                .query()
                .and_then(|q| {
                    q.split('&')
                        .find_map(|p| p.strip_prefix("continuation-token="))
                })
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let all: Vec<_> = objects.iter().collect();
            let page = &all[start.min(all.len())..(start + 2).min(all.len())];
            let mut xml = String::from("<?xml version=\"1.0\"?><ListBucketResult>");
            for (key, (_, modified)) in page {
                xml.push_str(&format!(
                    "<Contents><Key>{key}</Key><LastModified>{modified}</LastModified></Contents>"
                ));
            }
            let more = start + 2 < all.len();
            xml.push_str(&format!("<IsTruncated>{more}</IsTruncated>"));
            if more {
                xml.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    start + 2
                ));
            }
            xml.push_str("</ListBucketResult>");
            xml.into_response()
        }
        (Method::GET, key) => match objects.get(key) {
            Some((bytes, _)) => bytes.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        (Method::DELETE, key) => {
            objects.remove(key);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 3, 3);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[9; 27]).unwrap();
    writer.finish().unwrap();
    out
}

#[tokio::test]
async fn media_live_in_an_s3_compatible_bucket() {
    let bucket = Bucket::default();
    let app = Router::new().fallback(handle).with_state(bucket.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let api = TestApi::start(move |c| {
        c.s3_endpoint = Some(endpoint);
        c.s3_bucket = "media-test".into();
        c.s3_access_key = ACCESS.into();
        c.s3_secret_key = Some(SecretString::from(SECRET));
    })
    .await;
    let health = api.get("/health/detailed", None).await;
    assert_eq!(health.body["checks"]["storage"], "s3");
    let user = api.register("user").await;

    // An upload goes to the bucket and comes back through a signed URL.
    let image = png();
    let boundary = "b0undary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&image);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let stored = api
        .client
        .post(format!("{}/api/v1/storage/uploads", api.base))
        .bearer_auth(&user.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);
    let stored: serde_json::Value = stored.json().await.unwrap();
    let id = stored["id"].as_str().unwrap().to_owned();
    let key = format!("uploads/{}/{id}.png", user.id);
    assert_eq!(
        bucket
            .objects
            .lock()
            .unwrap()
            .get(&key)
            .map(|o| o.0.clone()),
        Some(image.clone())
    );
    assert!(
        !api.running
            .as_ref()
            .unwrap()
            .state
            .media
            .root()
            .join(&key)
            .exists(),
        "not on local disk"
    );

    let url = api
        .get(
            &format!("/api/v1/storage/uploads/{id}/url"),
            Some(&user.token),
        )
        .await;
    let file = api
        .client
        .get(url.body["items"][0]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.bytes().await.unwrap().as_ref(), image.as_slice());
    let verify = api
        .post(
            &format!("/api/v1/storage/uploads/{id}/verify"),
            Some(&user.token),
            json!({}),
        )
        .await;
    assert_eq!(verify.body["intact"], true);

    // Generation outputs too.
    let project = api.project(&user, json!({ "name": "p" })).await;
    let done = api.generate(&user, &project, "a lighthouse").await;
    assert_eq!(done["status"], "completed");
    let generation_prefix = format!("generations/{}/", done["id"].as_str().unwrap());
    assert!(
        bucket
            .objects
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.starts_with(&generation_prefix))
    );

    // The sweep pages through the listing and removes only what no record names.
    for n in 0..3 {
        bucket.objects.lock().unwrap().insert(
            format!("uploads/stray-{n}.png"),
            (image.clone(), "2020-01-01T00:00:00Z".into()),
        );
    }
    let state = &api.running.as_ref().unwrap().state;
    let removed = state
        .media
        .sweep_orphans(&state.repo, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(bucket.objects.lock().unwrap().len(), 2);

    let deleted = api
        .send(
            Method::DELETE,
            &format!("/api/v1/storage/uploads/{id}"),
            Some(&user.token),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(!bucket.objects.lock().unwrap().contains_key(&key));
    assert_eq!(
        *bucket.bad_signatures.lock().unwrap(),
        0,
        "every request was signed correctly"
    );
    api.stop().await;
}

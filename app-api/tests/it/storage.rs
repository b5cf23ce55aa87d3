//! Uploads: the type comes from the bytes, not the name or header; executables and HTML are
//! refused; oversize bodies are refused before they are read; keys are the server's; downloads go
//! through PDP-signed URLs; integrity checks and the orphan sweep work.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Reply, Session, TestApi};

const BOUNDARY: &str = "velro-test-boundary-7d3f";

fn multipart(filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(api: &TestApi, user: &Session, body: reqwest::Body) -> Reply {
    let response = api
        .client
        .post(format!("{}/api/v1/storage/uploads", api.base))
        .bearer_auth(&user.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        body,
        headers,
    }
}

fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 4, 4);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[7; 48]).unwrap();
    writer.finish().unwrap();
    out
}

#[tokio::test]
async fn uploads_are_typed_by_their_bytes_and_owned_by_their_uploader() {
    let api = TestApi::start(|c| c.max_file_bytes = 64 * 1024).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let image = png();

    // A PNG named .mp4, sent as video/mp4, with a traversal name: stored as PNG under our key.
    let body = multipart("../../../etc/evil.mp4", "video/mp4", &image);
    let stored = upload(&api, &alice, body.into()).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    assert_eq!(stored.body["content_type"], "image/png");
    assert_eq!(stored.body["size_bytes"], image.len());
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &image));
    assert_eq!(stored.body["sha256"], sha.as_str());
    assert!(
        stored.body.get("storage_key").is_none(),
        "keys are not exposed"
    );
    let id = stored.body["id"].as_str().unwrap().to_owned();

    // Executables and HTML are refused, whatever they claim to be.
    for (name, kind, bytes) in [
        (
            "photo.png",
            "image/png",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
        ),
        (
            "index.html",
            "image/jpeg",
            b"<!doctype html><script>alert(1)</script>".to_vec(),
        ),
        (
            "setup.exe",
            "application/octet-stream",
            b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec(),
        ),
        ("tiny.gif", "image/gif", b"GIF".to_vec()),
    ] {
        let reply = upload(&api, &alice, multipart(name, kind, &bytes).into()).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}");
        assert_eq!(reply.code(), "UNSUPPORTED_FILE_TYPE");
    }

    // Oversize: declared too large is refused before reading; streamed without a length is cut.
    let mut big = image.clone();
    big.resize(512 * 1024, 0);
    let reply = upload(&api, &alice, multipart("big.png", "image/png", &big).into()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = multipart("big.png", "image/png", &big)
        .chunks(16 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let reply = upload(&api, &alice, streamed).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "PAYLOAD_TOO_LARGE");

    // Nothing escaped the storage root; only the one upload is stored.
    let media = api
        .running
        .as_ref()
        .unwrap()
        .state
        .media
        .root()
        .to_path_buf();
    assert!(!media.join("../etc/evil.mp4").exists() && !media.join("../../etc").exists());

    // Owner: list, get, signed URL, integrity; bob: nothing.
    let list = api.get("/api/v1/storage/uploads", Some(&alice.token)).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let path = format!("/api/v1/storage/uploads/{id}");
    assert_eq!(
        api.get(&path, Some(&bob.token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{path}/url"), Some(&bob.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let url = api.get(&format!("{path}/url"), Some(&alice.token)).await;
    assert_eq!(url.status, StatusCode::OK, "{}", url.body);
    let signed = url.body["items"][0]["url"].as_str().unwrap().to_owned();
    assert!(
        signed.contains(&format!("/media/uploads/{}/{id}.png?", alice.id)),
        "{signed}"
    );
    let download = api.client.get(&signed).send().await.unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(download.bytes().await.unwrap().as_ref(), image.as_slice());
    let tampered = signed.replace(&id, &uuid::Uuid::now_v7().to_string());
    assert_eq!(
        api.client.get(&tampered).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let verify = api
        .post(
            &format!("{path}/verify"),
            Some(&alice.token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(verify.body["intact"], true, "{}", verify.body);
    let file = media.join(format!("uploads/{}/{id}.png", alice.id));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 0xFF;
    std::fs::write(&file, &bytes).unwrap();
    let verify = api
        .post(
            &format!("{path}/verify"),
            Some(&alice.token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(verify.body["intact"], false);

    let usage = api.get("/api/v1/storage/usage", Some(&alice.token)).await;
    assert_eq!(usage.body["files"], 1);

    // Orphans (a file without a record) are swept; recorded files stay.
    let stray = media.join("uploads/stray.png");
    std::fs::write(&stray, &image).unwrap();
    let state = &api.running.as_ref().unwrap().state;
    let removed = state
        .media
        .sweep_orphans(&state.repo, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!stray.exists() && file.exists());

    let delete = api
        .send(Method::DELETE, &path, Some(&bob.token), None, &[])
        .await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    let delete = api
        .send(Method::DELETE, &path, Some(&alice.token), None, &[])
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(!file.exists());
    assert_eq!(
        api.get(&path, Some(&alice.token)).await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

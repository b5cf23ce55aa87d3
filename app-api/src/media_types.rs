//! What a file is, decided by its first bytes (never by its name or the client's header): the
//! image and video types Velro stores.

/// The content type and extension of `bytes` by magic number, for the accepted media types.
pub fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some(("image/png", "png"))
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(("image/jpeg", "jpg"))
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("image/webp", "webp"))
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(("image/gif", "gif"))
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        if &bytes[8..10] == b"qt" {
            Some(("video/quicktime", "mov"))
        } else {
            Some(("video/mp4", "mp4"))
        }
    } else if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(("video/webm", "webm"))
    } else {
        None
    }
}

/// How many leading bytes `sniff` needs.
pub const SNIFF_BYTES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_magic_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest").unwrap().0, "image/png");
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap().0, "image/jpeg");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap().0, "image/webp");
        assert_eq!(sniff(b"GIF89a..").unwrap().0, "image/gif");
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42").unwrap().0, "video/mp4");
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  ").unwrap().0, "video/quicktime");
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0]).unwrap().0, "video/webm");
        for bad in [
            &b"<html><script>"[..],
            b"MZ\x90\0",
            b"\x7fELF\x02",
            b"#!/bin/sh",
            b"",
        ] {
            assert!(sniff(bad).is_none());
        }
    }
}

//! Layer media types and compression: which media types are compressed how (containerd's
//! `images.DiffCompression`), detection by magic bytes on the way in (`DecompressStream`)
//! and a gzip writer on the way out. Only gzip is implemented; zstd is recognised and
//! refused as NotImplemented.

use std::io::{self, Cursor, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::content::Digest;
use crate::errdefs::{Class, Error};

/// An uncompressed OCI layer.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed OCI layer: the default media type of a diff.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A zstd-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The deprecated non-distributable OCI layer.
pub const MEDIA_TYPE_LAYER_NON_DISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Docker's uncompressed layer (in practice often gzip: detected by magic).
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker's gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's zstd layer.
pub const MEDIA_TYPE_DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker's foreign layers.
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The media type a diff is written in when the request names none.
pub const DEFAULT_DIFF_MEDIA_TYPE: &str = MEDIA_TYPE_LAYER_GZIP;

/// How a stream is (or is to be) compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Uncompressed,
    Gzip,
    Zstd,
}

/// What a layer media type says about its compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar (or a media type with other `+` suffixes, such as `+encrypted`).
    None,
    Gzip,
    Zstd,
    /// Docker's `…diff.tar`: decided by magic bytes.
    Unknown,
}

/// containerd's `DiffCompression`: NotImplemented for media types that are not layers.
pub fn layer_compression(media_type: &str) -> Result<LayerCompression, Error> {
    let (base, mut suffixes) = match media_type.split_once('+') {
        Some((base, rest)) => (base, rest.split('+').collect::<Vec<_>>()),
        None => (media_type, Vec::new()),
    };
    suffixes.sort_unstable();
    let plain = suffixes.is_empty();
    let compression = match base {
        MEDIA_TYPE_DOCKER_LAYER | MEDIA_TYPE_DOCKER_LAYER_FOREIGN if plain => {
            LayerCompression::Unknown
        }
        MEDIA_TYPE_DOCKER_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP if plain => {
            LayerCompression::Gzip
        }
        MEDIA_TYPE_DOCKER_LAYER_ZSTD if plain => LayerCompression::Zstd,
        MEDIA_TYPE_DOCKER_LAYER
        | MEDIA_TYPE_DOCKER_LAYER_FOREIGN
        | MEDIA_TYPE_DOCKER_LAYER_GZIP
        | MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP
        | MEDIA_TYPE_DOCKER_LAYER_ZSTD => LayerCompression::None,
        MEDIA_TYPE_LAYER | MEDIA_TYPE_LAYER_NON_DISTRIBUTABLE => match suffixes.last() {
            Some(&"gzip") => LayerCompression::Gzip,
            Some(&"zstd") => LayerCompression::Zstd,
            _ => LayerCompression::None,
        },
        _ => {
            return Err(Error::wrapped(
                Class::NotImplemented,
                format!("unrecognised mediatype {media_type}"),
            ))
        }
    };
    Ok(compression)
}

/// Whether `media_type` is a gzip-compressed layer (OCI `+gzip` or Docker `.tar.gzip`).
pub fn is_gzip_media_type(media_type: &str) -> bool {
    layer_compression(media_type).is_ok_and(|c| c == LayerCompression::Gzip)
}

/// Whether `media_type` is a zstd-compressed layer.
pub fn is_zstd_media_type(media_type: &str) -> bool {
    layer_compression(media_type).is_ok_and(|c| c == LayerCompression::Zstd)
}

/// Whether `media_type` is an uncompressed OCI or Docker layer tar.
pub fn is_uncompressed_media_type(media_type: &str) -> bool {
    matches!(media_type, MEDIA_TYPE_LAYER | MEDIA_TYPE_DOCKER_LAYER)
}

/// Whether `media_type` names a layer of any kind (containerd's `IsLayerType`).
pub fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || layer_compression(media_type).is_ok()
}

/// The compression of a diff written in `media_type` (empty: the default, gzip), as the
/// walking differ accepts them; others are NotImplemented.
pub fn diff_compression(media_type: &str) -> Result<Compression, Error> {
    match media_type {
        "" | MEDIA_TYPE_LAYER_GZIP => Ok(Compression::Gzip),
        MEDIA_TYPE_LAYER => Ok(Compression::Uncompressed),
        MEDIA_TYPE_LAYER_ZSTD => Err(unsupported(Compression::Zstd)),
        other => Err(Error::wrapped(
            Class::NotImplemented,
            format!("unsupported diff media type: {other}"),
        )),
    }
}

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The compression whose magic number starts `head` (zstd skippable frames included).
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        return Compression::Gzip;
    }
    if head.starts_with(&ZSTD_MAGIC) {
        return Compression::Zstd;
    }
    if let Some(word) = head.get(..4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if word & 0xFFFF_FFF0 == 0x184D_2A50 {
            return Compression::Zstd;
        }
    }
    Compression::Uncompressed
}

fn unsupported(compression: Compression) -> Error {
    let name = match compression {
        Compression::Uncompressed => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    Error::wrapped(
        Class::NotImplemented,
        format!("unsupported compression format {name}"),
    )
}

/// Decompresses `input` according to its first bytes: gzip (multi-member) is inflated,
/// anything unrecognised passes through unchanged, zstd is NotImplemented.
pub fn decompress(mut input: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>, Error> {
    let mut head = Vec::with_capacity(10);
    (&mut input)
        .take(10)
        .read_to_end(&mut head)
        .map_err(|err| Error::from(err).context("failed to detect compression"))?;
    let compression = detect(&head);
    let whole = Cursor::new(head).chain(input);
    match compression {
        Compression::Uncompressed => Ok(Box::new(whole)),
        Compression::Gzip => Ok(Box::new(MultiGzDecoder::new(whole))),
        Compression::Zstd => Err(unsupported(compression)),
    }
}

/// Where a diff tar is written: plain or through gzip, hashing the uncompressed bytes on
/// the way (the `containerd.io/uncompressed` label of a compressed diff).
pub struct DiffWriter<W: Write> {
    sink: Sink<W>,
    hasher: Sha256,
}

enum Sink<W: Write> {
    Plain(W),
    Gzip(GzEncoder<W>),
}

impl<W: Write> DiffWriter<W> {
    /// A writer for a diff in `media_type` (see [`diff_compression`]).
    pub fn for_media_type(media_type: &str, out: W) -> Result<DiffWriter<W>, Error> {
        DiffWriter::new(diff_compression(media_type)?, out)
    }

    /// A writer compressing with `compression`; zstd is NotImplemented.
    pub fn new(compression: Compression, out: W) -> Result<DiffWriter<W>, Error> {
        let sink = match compression {
            Compression::Uncompressed => Sink::Plain(out),
            Compression::Gzip => Sink::Gzip(GzEncoder::new(out, flate2::Compression::default())),
            Compression::Zstd => return Err(unsupported(compression)),
        };
        Ok(DiffWriter {
            sink,
            hasher: Sha256::new(),
        })
    }

    /// Ends the compressed stream; returns the output and the uncompressed tar's digest.
    pub fn finish(self) -> io::Result<(W, Digest)> {
        let digest = Digest::from_sha256(&self.hasher.finalize().into());
        let out = match self.sink {
            Sink::Plain(mut out) => {
                out.flush()?;
                out
            }
            Sink::Gzip(encoder) => {
                let mut out = encoder.finish()?;
                out.flush()?;
                out
            }
        };
        Ok((out, digest))
    }
}

impl<W: Write> Write for DiffWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.sink {
            Sink::Plain(out) => out.write(buf)?,
            Sink::Gzip(encoder) => encoder.write(buf)?,
        };
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(out) => out.flush(),
            Sink::Gzip(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut writer = DiffWriter::new(Compression::Gzip, Vec::new()).expect("writer");
        writer.write_all(data).expect("write");
        writer.finish().expect("finish").0
    }

    fn read_all(reader: Box<dyn Read + Send>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut reader = reader;
        reader.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect(&gzip(b"x")), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(
            detect(&[0x5a, 0x2a, 0x4d, 0x18]),
            Compression::Zstd,
            "skippable"
        );
        assert_eq!(detect(b"plain tar"), Compression::Uncompressed);
        assert_eq!(detect(&[0x1f]), Compression::Uncompressed);
        assert_eq!(detect(b""), Compression::Uncompressed);
    }

    #[test]
    fn decompress_inflates_gzip_and_passes_plain_through() {
        let data = b"layer bytes ".repeat(1000);
        assert_eq!(
            read_all(decompress(Box::new(Cursor::new(gzip(&data)))).expect("gz")),
            data
        );
        assert_eq!(
            read_all(decompress(Box::new(Cursor::new(data.clone()))).expect("plain")),
            data
        );
        assert_eq!(
            read_all(decompress(Box::new(io::empty())).expect("empty")),
            b""
        );
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(
            read_all(decompress(Box::new(Cursor::new(two))).expect("multi")),
            b"first second"
        );
    }

    #[test]
    fn decompress_refuses_zstd_as_unimplemented() {
        let input = Cursor::new(vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
        let err = decompress(Box::new(input)).err().expect("zstd refused");
        assert_eq!(err.class(), Class::NotImplemented);
        assert!(err.message().contains("unsupported compression"), "{err}");
    }

    #[test]
    fn media_types_map_to_compression() {
        use LayerCompression as L;
        let cases = [
            (MEDIA_TYPE_LAYER, L::None),
            (MEDIA_TYPE_LAYER_GZIP, L::Gzip),
            (MEDIA_TYPE_LAYER_ZSTD, L::Zstd),
            // containerd sorts the suffixes and looks at the last one.
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                L::Gzip,
            ),
            ("application/vnd.oci.image.layer.v1.tar+encrypted", L::None),
            (MEDIA_TYPE_DOCKER_LAYER, L::Unknown),
            (MEDIA_TYPE_DOCKER_LAYER_GZIP, L::Gzip),
            (MEDIA_TYPE_DOCKER_LAYER_ZSTD, L::Zstd),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                layer_compression(media_type).expect(media_type),
                want,
                "{media_type}"
            );
        }
        let err = layer_compression("application/json").expect_err("not a layer");
        assert_eq!(err.class(), Class::NotImplemented);
        assert!(is_gzip_media_type(MEDIA_TYPE_DOCKER_LAYER_GZIP));
        assert!(is_gzip_media_type(MEDIA_TYPE_LAYER_GZIP));
        assert!(!is_gzip_media_type(MEDIA_TYPE_LAYER));
        assert!(is_zstd_media_type(MEDIA_TYPE_LAYER_ZSTD));
        assert!(is_layer_media_type(MEDIA_TYPE_DOCKER_LAYER));
        assert!(!is_layer_media_type("application/json"));
    }

    #[test]
    fn diff_media_types_choose_the_writer() {
        assert_eq!(diff_compression("").expect("default"), Compression::Gzip);
        assert_eq!(
            diff_compression(MEDIA_TYPE_LAYER).expect("tar"),
            Compression::Uncompressed
        );
        let zstd = diff_compression(MEDIA_TYPE_LAYER_ZSTD).expect_err("zstd");
        assert_eq!(zstd.class(), Class::NotImplemented);
        let other = diff_compression("text/plain").expect_err("other");
        assert_eq!(
            other.message(),
            "unsupported diff media type: text/plain: not implemented"
        );

        let mut plain = DiffWriter::for_media_type(MEDIA_TYPE_LAYER, Vec::new()).expect("tar");
        plain.write_all(b"abc").expect("write");
        let (bytes, digest) = plain.finish().expect("finish");
        assert_eq!(
            (bytes.as_slice(), digest),
            (&b"abc"[..], Digest::of(b"abc"))
        );

        let mut gz = DiffWriter::for_media_type("", Vec::new()).expect("gzip");
        gz.write_all(b"abc").expect("write");
        let (bytes, digest) = gz.finish().expect("finish");
        assert_eq!(
            digest,
            Digest::of(b"abc"),
            "digest of the uncompressed bytes"
        );
        assert_eq!(
            read_all(decompress(Box::new(Cursor::new(bytes))).expect("gz")),
            b"abc"
        );
    }
}

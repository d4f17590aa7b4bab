//! Opening an archive or a layer blob as its uncompressed stream: plain tar, gzip or zstd,
//! told apart by magic number (media types are absent from `docker save` and often wrong).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::layout::io_err;
use super::manifest;
use super::ImagesError;

pub(crate) fn decompressed(path: &Path) -> Result<Box<dyn Read>, ImagesError> {
    let f = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = r
        .fill_buf()
        .map_err(io_err(format!("reading {}", path.display())))?;
    match manifest::layer_media_type(head) {
        manifest::OCI_LAYER_GZIP => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
        manifest::OCI_LAYER_ZSTD => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(r).map_err(|e| ImagesError::Archive {
                    path: path.to_path_buf(),
                    reason: format!("not a valid zstd stream: {e}"),
                })?;
            Ok(Box::new(decoder))
        }
        _ => Ok(Box::new(r)),
    }
}

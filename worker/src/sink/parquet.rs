//! How the worker writes a batch's Parquet files: the compression codec is a tuning knob
//! (`TRIBUTARY_PARQUET_COMPRESSION`), the rest are the Parquet writer's defaults (dictionary
//! encoding on, 1 MiB data pages).

use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;

use crate::tuning::ParquetCompression;

fn codec(compression: ParquetCompression) -> Compression {
    match compression {
        ParquetCompression::Snappy => Compression::SNAPPY,
        // Level 1 is always valid; the fallback is never taken.
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        ParquetCompression::Lz4 => Compression::LZ4_RAW,
        ParquetCompression::Uncompressed => Compression::UNCOMPRESSED,
    }
}

/// The writer properties of the worker's data files.
pub fn writer_properties(compression: ParquetCompression) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(codec(compression))
        .build()
}

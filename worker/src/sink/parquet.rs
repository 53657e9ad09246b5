//! How the worker writes its Parquet files (a batch's, and those compaction rewrites): the
//! compression codec and the dictionary page limit are tuning knobs
//! (`TRIBUTARY_PARQUET_COMPRESSION`, `TRIBUTARY_PARQUET_DICTIONARY_PAGE_BYTES`), the rest are the
//! Parquet writer's defaults (1 MiB data pages, statistics per page).

use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;

use crate::tuning::{ParquetCompression, ParquetSettings};

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
pub fn writer_properties(settings: ParquetSettings) -> WriterProperties {
    let dictionary = settings.dictionary_page_bytes > 0;
    let builder = WriterProperties::builder()
        .set_compression(codec(settings.compression))
        .set_dictionary_enabled(dictionary);
    if dictionary {
        builder.set_dictionary_page_size_limit(settings.dictionary_page_bytes)
    } else {
        builder
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::parquet::schema::types::ColumnPath;

    #[test]
    fn the_dictionary_limit_reaches_the_writer_and_zero_turns_it_off() {
        let column = ColumnPath::from("timestamp");
        let defaults = writer_properties(ParquetSettings::default());
        assert!(defaults.dictionary_enabled(&column));
        assert_eq!(defaults.dictionary_page_size_limit(), 1 << 20);
        assert_eq!(defaults.compression(&column), Compression::SNAPPY);

        let small = writer_properties(ParquetSettings {
            dictionary_page_bytes: 64 << 10,
            ..ParquetSettings::default()
        });
        assert!(small.dictionary_enabled(&column));
        assert_eq!(small.dictionary_page_size_limit(), 64 << 10);

        let off = writer_properties(ParquetSettings {
            compression: ParquetCompression::Lz4,
            dictionary_page_bytes: 0,
        });
        assert!(!off.dictionary_enabled(&column));
        assert_eq!(off.compression(&column), Compression::LZ4_RAW);
    }
}

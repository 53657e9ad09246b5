//! How the worker writes its Parquet files (a batch's, and those compaction rewrites): the
//! compression codec and the dictionary page limit are tuning knobs
//! (`TRIBUTARY_PARQUET_COMPRESSION`, `TRIBUTARY_PARQUET_DICTIONARY_PAGE_BYTES`), the rest are the
//! Parquet writer's defaults (1 MiB data pages, statistics per page).
//!
//! A batch's file also leaves out the dictionary of each column where a sample of the batch
//! says it would not pay: parquet-rs keeps hashing every value into a column's dictionary
//! until the page limit, where Spark's writer (parquet-mr) drops it at the first page unless
//! dictionary and indices are smaller than the plain values. For the offset column, or any
//! near-unique one such as an event time, that hashing cost the worker ~8 % of its CPU reading
//! a backlog of readings, and the files came out ~10 % larger (README, Performance). The test
//! here is stricter than parquet-mr's, [`DICTIONARY_MAX_SHARE`]: the plain values are
//! compressed after encoding and the dictionary's indices barely are, so a dictionary that
//! saves a tenth before compression can leave the file larger after it, at the cost of a hash
//! per value.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use deltalake::arrow::array::{Array, ArrayData, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Schema};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use deltalake::parquet::schema::types::ColumnPath;

use crate::tuning::{ParquetCompression, ParquetSettings};

/// Values of a column looked at to judge its dictionary: enough to tell a column of a few
/// thousand values from a near-unique one, cheap next to encoding the batch.
const DICTIONARY_SAMPLE: usize = 4096;
/// At most this many bytes of values are sampled (fewer values when they are large)...
const DICTIONARY_SAMPLE_BYTES: usize = 1 << 20;
/// ...but no fewer values than this: a column of larger values keeps its dictionary.
const DICTIONARY_SAMPLE_MIN: usize = 64;
/// A column keeps its dictionary when dictionary and indices take at most this share of its
/// plain values. On the benchmark's readings, a device id of 100,000 values over batches of
/// ~54,000 rows (dictionary and indices 0.9 of the plain values) wrote 1.4 % larger files
/// with its dictionary than without, and the Parquet writer took a quarter longer (README,
/// Performance); columns of few values (a site, a status, a reading's 5,000 temperatures)
/// stay far below it.
const DICTIONARY_MAX_SHARE: f64 = 2.0 / 3.0;

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
    builder(settings).build()
}

/// [`writer_properties`] for a file of the rows of `parts` (batches of `schema`, written one
/// after the other): without a dictionary for the top-level columns whose sample says it would
/// not pay.
pub fn writer_properties_for(
    settings: ParquetSettings,
    schema: &Schema,
    parts: &[&RecordBatch],
) -> WriterProperties {
    let mut builder = builder(settings);
    if settings.dictionary_page_bytes > 0 {
        for (i, field) in schema.fields().iter().enumerate() {
            let column: Option<Vec<&ArrayRef>> =
                parts.iter().map(|part| part.columns().get(i)).collect();
            if let Some(shape) = column.and_then(|column| ColumnShape::sample(&column))
                && !shape.dictionary_pays(settings.dictionary_page_bytes)
            {
                builder = builder
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
    }
    builder.build()
}

fn builder(settings: ParquetSettings) -> WriterPropertiesBuilder {
    let dictionary = settings.dictionary_page_bytes > 0;
    let builder = WriterProperties::builder()
        .set_compression(codec(settings.compression))
        .set_dictionary_enabled(dictionary);
    if dictionary {
        builder.set_dictionary_page_size_limit(settings.dictionary_page_bytes)
    } else {
        builder
    }
}

/// What a sample says of one column: how many values it holds, how many of them differ, and
/// their size.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ColumnShape {
    /// Non-null values in the whole column.
    values: f64,
    /// Distinct values expected among them.
    distinct: f64,
    /// Plain-encoded bytes per value.
    value_bytes: f64,
}

impl ColumnShape {
    /// Samples a column (given as its arrays in each part of the batch, in order) whose
    /// Parquet values are of one kind (numbers, dates, times, strings, bytes); None for the
    /// others (nested, booleans, which have no dictionary to spare) and for a column without
    /// values.
    fn sample(parts: &[&ArrayRef]) -> Option<ColumnShape> {
        let rows: usize = parts.iter().map(|part| part.len()).sum();
        let values = rows - parts.iter().map(|part| part.null_count()).sum::<usize>();
        if values == 0 {
            return None;
        }
        let value_bytes = plain_bytes(parts, values)?;
        // Fewer of large values, so that hashing the sample stays cheap; values too large for
        // even a small sample keep the writer's default.
        let wanted =
            ((DICTIONARY_SAMPLE_BYTES as f64 / value_bytes) as usize).min(DICTIONARY_SAMPLE);
        if wanted < DICTIONARY_SAMPLE_MIN {
            return None;
        }
        // Positions spread over the batch (records come partition by partition, in offset
        // order), read in place: each value's bytes hashed where they lie, without copying the
        // sample out of the column first: taking, concatenating and row-encoding it cost the
        // commit thread about 3 % of its Parquet writing time over 4M rows.
        let wanted = wanted.min(rows);
        let data: Vec<ArrayData> = parts.iter().map(|part| part.to_data()).collect();
        let mut distinct: HashSet<&[u8], BuildHasherDefault<ahash::AHasher>> =
            HashSet::with_capacity_and_hasher(wanted, BuildHasherDefault::default());
        let (mut part, mut start, mut sampled) = (0, 0, 0);
        for i in 0..wanted {
            let position = i * rows / wanted;
            while position >= start + parts.get(part)?.len() {
                start += parts.get(part)?.len();
                part += 1;
            }
            let local = position - start;
            if parts.get(part)?.is_null(local) {
                continue;
            }
            distinct.insert(value_at(data.get(part)?, local)?);
            sampled += 1;
        }
        if sampled == 0 {
            return None;
        }
        let seen = distinct.len();
        let values = values as f64;
        Some(ColumnShape {
            values,
            distinct: expected_distinct(values, sampled as f64, seen as f64),
            value_bytes,
        })
    }

    /// Whether a dictionary makes the column clearly smaller: dictionary plus bit-packed
    /// indices at most [`DICTIONARY_MAX_SHARE`] of the plain values (parquet-mr asks only that
    /// they be smaller); and a dictionary within the page limit, past which the writer encodes
    /// the rest plainly anyway.
    fn dictionary_pays(&self, page_limit: usize) -> bool {
        self.distinct * self.value_bytes <= page_limit as f64
            && self.dictionary_share() <= DICTIONARY_MAX_SHARE
    }

    /// Dictionary plus bit-packed indices, as a share of the plain values.
    fn dictionary_share(&self) -> f64 {
        let dictionary = self.distinct * self.value_bytes;
        let index_bits = self.distinct.max(2.0).log2().ceil();
        let indices = self.values * index_bits / 8.0;
        (dictionary + indices) / (self.values * self.value_bytes)
    }
}

/// Plain-encoded bytes per value of a column (its arrays in each part) holding `values`
/// non-null values (a string's or a byte array's length prefix included); None for the kinds
/// not judged.
fn plain_bytes(parts: &[&ArrayRef], values: usize) -> Option<f64> {
    fn spanned<O: deltalake::arrow::array::OffsetSizeTrait>(offsets: &[O]) -> usize {
        match (offsets.first(), offsets.last()) {
            (Some(first), Some(last)) => (*last - *first).as_usize(),
            _ => 0,
        }
    }
    let mut data_bytes = 0;
    for column in parts {
        data_bytes += match column.data_type() {
            DataType::Utf8 => spanned(column.as_string::<i32>().value_offsets()),
            DataType::LargeUtf8 => spanned(column.as_string::<i64>().value_offsets()),
            DataType::Binary => spanned(column.as_binary::<i32>().value_offsets()),
            DataType::LargeBinary => spanned(column.as_binary::<i64>().value_offsets()),
            other if other.is_primitive() => return other.primitive_width().map(|w| w as f64),
            _ => return None,
        };
    }
    Some(data_bytes as f64 / values.max(1) as f64 + 4.0)
}

/// The bytes of value `index` of a column whose kind [`plain_bytes`] judges: a string's or
/// binary's own bytes, a fixed-width value's bytes as they are in memory; None past its end.
fn value_at(data: &ArrayData, index: usize) -> Option<&[u8]> {
    let at = data.offset() + index;
    let buffers = data.buffers();
    // The value's bounds in the values buffer, from an offsets buffer of `width`-byte offsets.
    let bounds = |width: usize| -> Option<(usize, usize)> {
        let offsets = buffers.first()?.as_slice();
        let offset = |i: usize| -> Option<usize> {
            let bytes = offsets.get(i * width..(i + 1) * width)?;
            match width {
                4 => usize::try_from(i32::from_ne_bytes(bytes.try_into().ok()?)).ok(),
                _ => usize::try_from(i64::from_ne_bytes(bytes.try_into().ok()?)).ok(),
            }
        };
        Some((offset(at)?, offset(at + 1)?))
    };
    match data.data_type() {
        DataType::Utf8 | DataType::Binary => {
            let (from, to) = bounds(4)?;
            buffers.get(1)?.as_slice().get(from..to)
        }
        DataType::LargeUtf8 | DataType::LargeBinary => {
            let (from, to) = bounds(8)?;
            buffers.get(1)?.as_slice().get(from..to)
        }
        other => {
            let width = other.primitive_width()?;
            buffers
                .first()?
                .as_slice()
                .get(at * width..(at + 1) * width)
        }
    }
}

/// The distinct values expected among `values` drawn like the `sampled` ones, of which `seen`
/// differed: the number of different values N the column draws from is the one for which
/// `sampled` uniform draws show `seen` distinct on average, N (1 - e^(-sampled/N)); the
/// column then shows N (1 - e^(-values/N)). A sample without a repeat is taken as a column
/// without one. Skewed values show fewer distinct in the sample, so the estimate errs towards
/// keeping the dictionary, the writer's own default.
fn expected_distinct(values: f64, sampled: f64, seen: f64) -> f64 {
    if sampled >= values {
        return seen;
    }
    if seen >= sampled {
        return values;
    }
    let shown = |n: f64, draws: f64| n * (1.0 - (-draws / n).exp());
    // shown(n, sampled) grows with n from seen's side: bisect in log space.
    let (mut low, mut high) = (seen.max(1.0), seen.max(1.0));
    while shown(high, sampled) < seen && high < 1e15 {
        high *= 2.0;
    }
    for _ in 0..64 {
        let middle = (low * high).sqrt();
        if shown(middle, sampled) < seen {
            low = middle;
        } else {
            high = middle;
        }
    }
    shown(high, values).min(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use deltalake::arrow::array::{
        BinaryArray, BooleanArray, Float64Array, Int64Array, LargeStringArray, StringArray,
        TimestampMicrosecondArray,
    };
    use deltalake::parquet::arrow::ArrowWriter;

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

    /// 50,000 rows as a backlog's batch has them: a unique offset and event time, a device of
    /// 100,000, a site of 40, a temperature of 5,000 values, a flag, and a column of nulls.
    fn readings(rows: i64) -> RecordBatch {
        // splitmix64's finaliser: values spread like random draws.
        let mix = |i: i64| {
            let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        RecordBatch::try_from_iter([
            (
                "kafka_offset",
                Arc::new(Int64Array::from_iter_values(1_000_000..1_000_000 + rows)) as ArrayRef,
            ),
            (
                "timestamp",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    (0..rows).map(|i| 1_764_000_000_000_000 + i * 50 + (mix(i) % 50) as i64),
                )),
            ),
            (
                "device_id",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("sensor-{:06}", mix(i) % 100_000)),
                )),
            ),
            (
                "site",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("plant-{:02}", mix(i) % 40)),
                )),
            ),
            (
                "temperature",
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| -10.0 + (mix(i) % 5_000) as f64 / 100.0),
                )),
            ),
            (
                "ok",
                Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 3 == 0)))),
            ),
            (
                "note",
                Arc::new(StringArray::from_iter((0..rows).map(|_| None::<&str>))),
            ),
        ])
        .expect("batch")
    }

    /// The writer properties for one batch written whole.
    fn properties_for(settings: ParquetSettings, batch: &RecordBatch) -> WriterProperties {
        writer_properties_for(settings, &batch.schema(), &[batch])
    }

    fn dictionary_of(properties: &WriterProperties, column: &str) -> bool {
        properties.dictionary_enabled(&ColumnPath::from(column))
    }

    #[test]
    fn near_unique_columns_are_written_without_a_dictionary_and_the_rest_with_one() {
        let batch = readings(50_000);
        let chosen = properties_for(ParquetSettings::default(), &batch);
        assert!(!dictionary_of(&chosen, "kafka_offset"));
        assert!(!dictionary_of(&chosen, "timestamp"));
        for column in ["site", "temperature", "ok", "note"] {
            assert!(dictionary_of(&chosen, column), "{column}");
        }
        // 100,000 devices over 50,000 rows: ~39,000 distinct of 17 bytes, a dictionary of
        // ~670 KiB and indices that together are ~0.9 of the plain values: smaller, as
        // parquet-mr would judge it, but not by the third asked here.
        assert!(!dictionary_of(&chosen, "device_id"));
        let shape = ColumnShape::sample(&[batch.column_by_name("device_id").expect("column")])
            .expect("judged");
        let share = shape.dictionary_share();
        assert!(
            (0.8..0.95).contains(&share),
            "dictionary and indices: {share} of plain"
        );
        // With a 4 KiB page limit the writer would give up a dictionary of 5,000 temperatures
        // part way: not started.
        let small = properties_for(
            ParquetSettings {
                dictionary_page_bytes: 4 << 10,
                ..ParquetSettings::default()
            },
            &batch,
        );
        assert!(!dictionary_of(&small, "temperature"));
        assert!(dictionary_of(&small, "site"));

        // A batch smaller than the sample is judged whole; dictionaries off stay off.
        let few = properties_for(ParquetSettings::default(), &readings(1_000));
        assert!(!dictionary_of(&few, "kafka_offset"));
        assert!(dictionary_of(&few, "site"));
        let off = properties_for(
            ParquetSettings {
                dictionary_page_bytes: 0,
                ..ParquetSettings::default()
            },
            &batch,
        );
        assert!(!dictionary_of(&off, "site"));
    }

    #[test]
    fn sampled_values_are_read_where_they_lie_in_sliced_columns_of_every_judged_kind() {
        let strings = StringArray::from(vec![Some("a"), None, Some("bcd"), Some(""), Some("éf")]);
        let large = LargeStringArray::from(vec!["x", "yy", "zzz"]);
        let binary = BinaryArray::from(vec![&b"\x00\x01"[..], b"", b"\xff"]);
        let longs = Int64Array::from(vec![1, -2, 3]);
        let doubles = Float64Array::from(vec![0.5, 1.5]);
        let cases: Vec<(ArrayRef, Vec<Vec<u8>>)> = vec![
            (
                Arc::new(strings.slice(2, 3)),
                vec![b"bcd".to_vec(), vec![], "éf".into()],
            ),
            (
                Arc::new(large.slice(1, 2)),
                vec![b"yy".to_vec(), b"zzz".to_vec()],
            ),
            (Arc::new(binary.slice(1, 2)), vec![vec![], vec![0xff]]),
            (
                Arc::new(longs.slice(1, 2)),
                vec![(-2i64).to_ne_bytes().to_vec(), 3i64.to_ne_bytes().to_vec()],
            ),
            (
                Arc::new(doubles.slice(1, 1)),
                vec![1.5f64.to_ne_bytes().to_vec()],
            ),
        ];
        for (column, expected) in cases {
            let data = column.to_data();
            let read: Vec<Vec<u8>> = (0..column.len())
                .map(|i| value_at(&data, i).expect("in bounds").to_vec())
                .collect();
            assert_eq!(read, expected, "{}", column.data_type());
            assert_eq!(value_at(&data, column.len() + 1), None);
        }
        let booleans: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert_eq!(value_at(&booleans.to_data(), 0), None);
    }

    #[test]
    fn a_batch_in_parts_is_judged_as_the_batch_whole() {
        let batch = readings(50_000);
        let parts = [
            batch.slice(0, 20_000),
            batch.slice(20_000, 17_000),
            batch.slice(37_000, 13_000),
        ];
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let in_parts: Vec<&ArrayRef> = parts.iter().map(|p| p.column(i)).collect();
            assert_eq!(
                ColumnShape::sample(&in_parts),
                ColumnShape::sample(&[batch.column(i)]),
                "{}",
                field.name()
            );
        }
        let whole = properties_for(ParquetSettings::default(), &batch);
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        let in_parts = writer_properties_for(ParquetSettings::default(), &batch.schema(), &refs);
        for field in batch.schema().fields() {
            let name = field.name();
            assert_eq!(
                dictionary_of(&in_parts, name),
                dictionary_of(&whole, name),
                "{name}"
            );
        }
        assert!(!dictionary_of(&in_parts, "kafka_offset"));
        assert!(dictionary_of(&in_parts, "site"));
    }

    #[test]
    fn large_values_are_sampled_fewer_or_not_at_all() {
        let unique = |rows: usize, bytes: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("{i:0bytes$}")),
            ))
        };
        // 2 KiB values: 512 of them sampled (1 MiB), enough to see they never repeat.
        let shape = ColumnShape::sample(&[&unique(3_000, 2_048)]).expect("judged");
        assert_eq!(shape.distinct, 3_000.0);
        assert!(!shape.dictionary_pays(1 << 20));
        // 32 KiB values: fewer than 64 fit in the sample's bytes, so the column is not
        // judged and keeps the writer's default.
        assert_eq!(ColumnShape::sample(&[&unique(100, 32_768)]), None);
    }

    #[test]
    fn the_file_is_no_larger_for_leaving_dictionaries_out() {
        let batch = readings(50_000);
        let file_bytes = |properties: WriterProperties| {
            let mut file = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut file, batch.schema(), Some(properties)).expect("writer");
            writer.write(&batch).expect("write");
            writer.close().expect("close");
            file.len()
        };
        let every_dictionary = file_bytes(writer_properties(ParquetSettings::default()));
        let sampled = file_bytes(properties_for(ParquetSettings::default(), &batch));
        assert!(
            sampled <= every_dictionary,
            "{sampled} bytes with sampled dictionaries, {every_dictionary} with every one"
        );
        // The device id's dictionary, which parquet-mr's test would keep, leaves the file
        // larger once it is compressed.
        let mut with_device_dictionary = builder(ParquetSettings::default());
        for column in ["kafka_offset", "timestamp"] {
            with_device_dictionary = with_device_dictionary
                .set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        let with_device_dictionary = file_bytes(with_device_dictionary.build());
        assert!(
            sampled < with_device_dictionary,
            "{sampled} bytes without the device id's dictionary, {with_device_dictionary} with it"
        );
    }

    #[test]
    fn the_distinct_estimate_follows_the_sample() {
        let shown = |n: f64, draws: f64| n * (1.0 - (-draws / n).exp());
        // A sample covering the column is exact; a sample without a repeat means none.
        assert_eq!(expected_distinct(1_000.0, 1_000.0, 640.0), 640.0);
        assert_eq!(expected_distinct(1e6, 4096.0, 4096.0), 1e6);
        // A column drawing from N values: the estimate finds N's distinct count again.
        for n in [500.0, 5_000.0, 100_000.0, 2e6] {
            let seen = shown(n, 4096.0).round();
            let estimate = expected_distinct(250_000.0, 4096.0, seen);
            let truth = shown(n, 250_000.0);
            assert!(
                (estimate - truth).abs() <= truth * 0.05,
                "N {n}: estimated {estimate}, expected {truth}"
            );
        }
    }
}

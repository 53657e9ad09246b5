//! Cells -> Arrow arrays of the declared Arrow types.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, MapArray,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer};
use deltalake::arrow::datatypes::{DataType as ArrowType, TimeUnit};

use super::convert::Cell;
use crate::error::{Error, Result};

fn mismatch(arrow: &ArrowType, cell: &Cell<'_>) -> Error {
    Error::Decode(format!(
        "internal: a {cell:?} cell does not belong in an Arrow {arrow} column"
    ))
}

macro_rules! primitive {
    ($builder:expr, $cells:expr, $arrow:expr, $pattern:pat => $value:expr) => {{
        let mut builder = $builder;
        for cell in $cells {
            match cell {
                Cell::Null => builder.append_null(),
                $pattern => builder.append_value($value),
                other => return Err(mismatch($arrow, other)),
            }
        }
        Arc::new(builder.finish()) as ArrayRef
    }};
}

/// One Arrow array of type `arrow` from cells made for it.
pub(crate) fn build(arrow: &ArrowType, cells: &[&Cell<'_>]) -> Result<ArrayRef> {
    let n = cells.len();
    let cells = cells.iter().copied();
    Ok(match arrow {
        ArrowType::Utf8 => {
            // Most string cells are short: one pass to size the buffer.
            let mut builder = StringBuilder::with_capacity(n, n * 16);
            for cell in cells {
                match cell {
                    Cell::Null => builder.append_null(),
                    Cell::Str(s) => builder.append_value(s.as_ref()),
                    other => return Err(mismatch(arrow, other)),
                }
            }
            Arc::new(builder.finish())
        }
        ArrowType::Boolean => {
            primitive!(BooleanBuilder::with_capacity(n), cells, arrow, Cell::Bool(v) => *v)
        }
        ArrowType::Int8 => {
            primitive!(Int8Builder::with_capacity(n), cells, arrow, Cell::I8(v) => *v)
        }
        ArrowType::Int16 => {
            primitive!(Int16Builder::with_capacity(n), cells, arrow, Cell::I16(v) => *v)
        }
        ArrowType::Int32 => {
            primitive!(Int32Builder::with_capacity(n), cells, arrow, Cell::I32(v) => *v)
        }
        ArrowType::Int64 => {
            primitive!(Int64Builder::with_capacity(n), cells, arrow, Cell::I64(v) => *v)
        }
        ArrowType::Float32 => {
            primitive!(Float32Builder::with_capacity(n), cells, arrow, Cell::F32(v) => *v)
        }
        ArrowType::Float64 => {
            primitive!(Float64Builder::with_capacity(n), cells, arrow, Cell::F64(v) => *v)
        }
        ArrowType::Date32 => {
            primitive!(Date32Builder::with_capacity(n), cells, arrow, Cell::I32(v) => *v)
        }
        ArrowType::Decimal128(precision, scale) => primitive!(
            Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(*precision, *scale)
                .map_err(|e| Error::Decode(e.to_string()))?,
            cells, arrow, Cell::Decimal(v) => *v
        ),
        ArrowType::Timestamp(TimeUnit::Microsecond, zone) => primitive!(
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone_opt(zone.clone()),
            cells, arrow, Cell::I64(v) => *v
        ),
        ArrowType::Binary => {
            primitive!(BinaryBuilder::with_capacity(n, n * 16), cells, arrow, Cell::Bin(v) => v)
        }
        ArrowType::List(field) => {
            let mut offsets = Vec::with_capacity(n + 1);
            offsets.push(0i32);
            let mut valid = Vec::with_capacity(n);
            let mut children: Vec<&Cell<'_>> = Vec::new();
            for cell in cells {
                match cell {
                    Cell::Null => valid.push(false),
                    Cell::List(items) => {
                        valid.push(true);
                        children.extend(items.iter());
                    }
                    other => return Err(mismatch(arrow, other)),
                }
                offsets.push(offset(children.len())?);
            }
            let child = build(field.data_type(), &children)?;
            Arc::new(
                ListArray::try_new(
                    field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    child,
                    nulls(valid),
                )
                .map_err(|e| Error::Decode(e.to_string()))?,
            )
        }
        ArrowType::Map(entries, sorted) => {
            let ArrowType::Struct(entry_fields) = entries.data_type() else {
                return Err(Error::Decode(format!(
                    "internal: map entries of type {arrow}"
                )));
            };
            let mut offsets = Vec::with_capacity(n + 1);
            offsets.push(0i32);
            let mut valid = Vec::with_capacity(n);
            let mut keys: Vec<Option<&str>> = Vec::new();
            let mut values: Vec<&Cell<'_>> = Vec::new();
            for cell in cells {
                match cell {
                    Cell::Null => valid.push(false),
                    Cell::Map(pairs) => {
                        valid.push(true);
                        for (k, v) in pairs {
                            keys.push(Some(k.as_ref()));
                            values.push(v);
                        }
                    }
                    other => return Err(mismatch(arrow, other)),
                }
                offsets.push(offset(keys.len())?);
            }
            let key_array: ArrayRef = Arc::new(StringArray::from(keys));
            let value_array = build(entry_fields[1].data_type(), &values)?;
            let entries_array =
                StructArray::try_new(entry_fields.clone(), vec![key_array, value_array], None)
                    .map_err(|e| Error::Decode(e.to_string()))?;
            Arc::new(
                MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(offsets.into()),
                    entries_array,
                    nulls(valid),
                    *sorted,
                )
                .map_err(|e| Error::Decode(e.to_string()))?,
            )
        }
        ArrowType::Struct(fields) => {
            let mut valid = Vec::with_capacity(n);
            let mut columns: Vec<Vec<&Cell<'_>>> = vec![Vec::with_capacity(n); fields.len()];
            for cell in cells {
                match cell {
                    Cell::Null => {
                        valid.push(false);
                        for column in &mut columns {
                            column.push(&Cell::Null);
                        }
                    }
                    Cell::Struct(members) if members.len() == fields.len() => {
                        valid.push(true);
                        for (column, member) in columns.iter_mut().zip(members) {
                            column.push(member);
                        }
                    }
                    other => return Err(mismatch(arrow, other)),
                }
            }
            let children = fields
                .iter()
                .zip(&columns)
                .map(|(field, column)| build(field.data_type(), column))
                .collect::<Result<Vec<_>>>()?;
            Arc::new(
                StructArray::try_new(fields.clone(), children, nulls(valid))
                    .map_err(|e| Error::Decode(e.to_string()))?,
            )
        }
        other => {
            return Err(Error::Decode(format!(
                "internal: no decoding into Arrow {other}"
            )));
        }
    })
}

fn offset(len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| {
        Error::Decode("a micro-batch holds more than 2^31 nested values in one column".into())
    })
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

/// One column of a micro-batch being decoded: an Arrow builder for a scalar type (cells go
/// straight in), cells kept for nested types (built at the end).
pub(crate) enum ColumnSink<'a> {
    Utf8(StringBuilder),
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Date32(Date32Builder),
    Decimal(Decimal128Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Binary(BinaryBuilder),
    Nested(ArrowType, Vec<Cell<'a>>),
}

/// Bytes per value a string or binary column starts with before any batch says otherwise.
pub(crate) const DEFAULT_VALUE_BYTES: usize = 16;
/// At most this much is reserved for one column's values up front; beyond it the builder grows.
const MAX_RESERVED_VALUE_BYTES: usize = 64 << 20;

impl<'a> ColumnSink<'a> {
    /// A sink for `n` values; a string or binary one with room for `value_bytes` bytes each.
    pub(crate) fn new(arrow: &ArrowType, n: usize, value_bytes: usize) -> Result<ColumnSink<'a>> {
        // A hint from a part of a few large values must not reserve gigabytes for many rows.
        let bytes = n.saturating_mul(value_bytes).min(MAX_RESERVED_VALUE_BYTES);
        Ok(match arrow {
            ArrowType::Utf8 => ColumnSink::Utf8(StringBuilder::with_capacity(n, bytes)),
            ArrowType::Boolean => ColumnSink::Boolean(BooleanBuilder::with_capacity(n)),
            ArrowType::Int8 => ColumnSink::Int8(Int8Builder::with_capacity(n)),
            ArrowType::Int16 => ColumnSink::Int16(Int16Builder::with_capacity(n)),
            ArrowType::Int32 => ColumnSink::Int32(Int32Builder::with_capacity(n)),
            ArrowType::Int64 => ColumnSink::Int64(Int64Builder::with_capacity(n)),
            ArrowType::Float32 => ColumnSink::Float32(Float32Builder::with_capacity(n)),
            ArrowType::Float64 => ColumnSink::Float64(Float64Builder::with_capacity(n)),
            ArrowType::Date32 => ColumnSink::Date32(Date32Builder::with_capacity(n)),
            ArrowType::Decimal128(precision, scale) => ColumnSink::Decimal(
                Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| Error::Decode(e.to_string()))?,
            ),
            ArrowType::Timestamp(TimeUnit::Microsecond, zone) => ColumnSink::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n).with_timezone_opt(zone.clone()),
            ),
            ArrowType::Binary => ColumnSink::Binary(BinaryBuilder::with_capacity(n, bytes)),
            other => ColumnSink::Nested(other.clone(), Vec::with_capacity(n)),
        })
    }

    /// The bytes of the values pushed so far, for a string or binary column.
    pub(crate) fn value_bytes(&self) -> Option<usize> {
        match self {
            ColumnSink::Utf8(b) => Some(b.values_slice().len()),
            ColumnSink::Binary(b) => Some(b.values_slice().len()),
            _ => None,
        }
    }

    pub(crate) fn push(&mut self, cell: Cell<'a>) -> Result<()> {
        macro_rules! put {
            ($builder:expr, $pattern:pat => $value:expr, $arrow:expr) => {
                match cell {
                    Cell::Null => $builder.append_null(),
                    $pattern => $builder.append_value($value),
                    other => return Err(mismatch(&$arrow, &other)),
                }
            };
        }
        match self {
            ColumnSink::Utf8(b) => put!(b, Cell::Str(v) => v.as_ref(), ArrowType::Utf8),
            ColumnSink::Boolean(b) => put!(b, Cell::Bool(v) => v, ArrowType::Boolean),
            ColumnSink::Int8(b) => put!(b, Cell::I8(v) => v, ArrowType::Int8),
            ColumnSink::Int16(b) => put!(b, Cell::I16(v) => v, ArrowType::Int16),
            ColumnSink::Int32(b) => put!(b, Cell::I32(v) => v, ArrowType::Int32),
            ColumnSink::Int64(b) => put!(b, Cell::I64(v) => v, ArrowType::Int64),
            ColumnSink::Float32(b) => put!(b, Cell::F32(v) => v, ArrowType::Float32),
            ColumnSink::Float64(b) => put!(b, Cell::F64(v) => v, ArrowType::Float64),
            ColumnSink::Date32(b) => put!(b, Cell::I32(v) => v, ArrowType::Date32),
            ColumnSink::Decimal(b) => put!(b, Cell::Decimal(v) => v, ArrowType::Decimal128(38, 0)),
            ColumnSink::Timestamp(b) => {
                put!(b, Cell::I64(v) => v, ArrowType::Timestamp(TimeUnit::Microsecond, None))
            }
            ColumnSink::Binary(b) => put!(b, Cell::Bin(v) => v, ArrowType::Binary),
            ColumnSink::Nested(_, cells) => cells.push(cell),
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnSink::Utf8(mut b) => Arc::new(b.finish()),
            ColumnSink::Boolean(mut b) => Arc::new(b.finish()),
            ColumnSink::Int8(mut b) => Arc::new(b.finish()),
            ColumnSink::Int16(mut b) => Arc::new(b.finish()),
            ColumnSink::Int32(mut b) => Arc::new(b.finish()),
            ColumnSink::Int64(mut b) => Arc::new(b.finish()),
            ColumnSink::Float32(mut b) => Arc::new(b.finish()),
            ColumnSink::Float64(mut b) => Arc::new(b.finish()),
            ColumnSink::Date32(mut b) => Arc::new(b.finish()),
            ColumnSink::Decimal(mut b) => Arc::new(b.finish()),
            ColumnSink::Timestamp(mut b) => Arc::new(b.finish()),
            ColumnSink::Binary(mut b) => Arc::new(b.finish()),
            ColumnSink::Nested(arrow, cells) => {
                let refs: Vec<&Cell<'_>> = cells.iter().collect();
                build(&arrow, &refs)?
            }
        })
    }
}

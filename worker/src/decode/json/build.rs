//! Cells -> Arrow arrays of the declared Arrow types: a micro-batch's columns as they are
//! filled (`ColumnSink`), and the children of nested columns (`build`).

use std::sync::Arc;

use deltalake::arrow::array::builder::{BooleanBufferBuilder, NullBufferBuilder};
use deltalake::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, ListArray, MapArray, PrimitiveArray,
    StringArray, StructArray,
};
use deltalake::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
use deltalake::arrow::datatypes::{
    ArrowNativeType, DataType as ArrowType, Date32Type, Decimal128Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;

use super::convert::Cell;
use crate::error::{Error, Result};

fn mismatch(arrow: &ArrowType, cell: &Cell<'_>) -> Error {
    Error::Decode(format!(
        "internal: a {cell:?} cell does not belong in an Arrow {arrow} column"
    ))
}

/// One Arrow array of type `arrow` from cells made for it (a nested column's, or its
/// children's).
pub(crate) fn build(arrow: &ArrowType, cells: &[&Cell<'_>]) -> Result<ArrayRef> {
    let n = cells.len();
    let cells = cells.iter().copied();
    Ok(match arrow {
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
        scalar => {
            let mut sink = ColumnSink::new(scalar, n, DEFAULT_VALUE_BYTES)?;
            if let ColumnSink::Nested(..) = sink {
                return Err(Error::Decode(format!(
                    "internal: no decoding into Arrow {scalar}"
                )));
            }
            for cell in cells {
                sink.push_scalar(cell)?;
            }
            sink.finish()?
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

/// One column of a micro-batch being decoded: the values of a scalar type go straight into
/// its buffers, cells of a nested type are kept (built at the end). A record's values are
/// pushed as its fields are read and taken back ([`ColumnSink::truncate`]) when the record
/// turns out not to be a row, or to be rescued whole; Arrow's builders cannot take a value
/// back, so a record's cells used to wait in a buffer of their own and be moved a second time.
pub(crate) enum ColumnSink<'a> {
    Utf8(Bytes),
    Binary(Bytes),
    Boolean(Booleans),
    Int8(Primitive<i8>),
    Int16(Primitive<i16>),
    /// int, and date (days since the epoch).
    Int32(Primitive<i32>),
    /// long, and timestamps (microseconds since the epoch).
    Int64(Primitive<i64>),
    Float32(Primitive<f32>),
    Float64(Primitive<f64>),
    Decimal(Primitive<i128>),
    Nested(ArrowType, Vec<Cell<'a>>),
}

/// Bytes per value a string or binary column starts with before any batch says otherwise.
pub(crate) const DEFAULT_VALUE_BYTES: usize = 16;
/// At most this much is reserved for one column's values up front; beyond it the builder grows.
const MAX_RESERVED_VALUE_BYTES: usize = 64 << 20;

/// Values of a primitive type (the column's Arrow type says which) and which of them are
/// null.
pub(crate) struct Primitive<N> {
    arrow: ArrowType,
    values: Vec<N>,
    nulls: NullBufferBuilder,
}

impl<N: ArrowNativeType> Primitive<N> {
    fn new(arrow: &ArrowType, n: usize) -> Self {
        Primitive {
            arrow: arrow.clone(),
            values: Vec::with_capacity(n),
            nulls: NullBufferBuilder::new(n),
        }
    }

    fn push(&mut self, value: N) {
        self.values.push(value);
        self.nulls.append_non_null();
    }

    /// The array, of Arrow type `T` (whose values are `N`s).
    fn finish_as<T: ArrowPrimitiveType<Native = N>>(mut self) -> Result<ArrayRef> {
        let nulls = self.nulls.finish();
        let array = PrimitiveArray::<T>::try_new(self.values.into(), nulls)
            .map_err(|e| Error::Decode(e.to_string()))?
            // The declared type carries what the native one does not: a timestamp's zone, a
            // decimal's precision and scale.
            .with_data_type(self.arrow);
        Ok(Arc::new(array))
    }
}

/// Strings or binary values: their bytes one after the other, where each ends, which are null.
pub(crate) struct Bytes {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Bytes {
    fn new(n: usize, bytes: usize) -> Bytes {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Bytes {
            offsets,
            values: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(n),
        }
    }

    /// Appends a value, or refuses it (leaving the column as it was) when the column would
    /// pass Arrow's 2 GiB of values in one array: checked before the copy, so that a value that
    /// does not fit is not copied first.
    fn push(&mut self, value: &[u8]) -> Result<()> {
        let end = i32::try_from(self.values.len() + value.len()).map_err(|_| {
            Error::Decode(
                "a column of one micro-batch holds more than 2 GiB of string or binary values \
                 (Arrow's limit for one array); lower maxBytesPerTrigger"
                    .into(),
            )
        })?;
        self.values.extend_from_slice(value);
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn parts(mut self) -> (OffsetBuffer<i32>, Buffer, Option<NullBuffer>) {
        let nulls = self.nulls.finish();
        (
            OffsetBuffer::new(self.offsets.into()),
            Buffer::from_vec(self.values),
            nulls,
        )
    }
}

/// Booleans and which of them are null.
pub(crate) struct Booleans {
    values: BooleanBufferBuilder,
    nulls: NullBufferBuilder,
}

/// What a column's buffers do whatever their values' type: what the record loop needs to pad a
/// row with nulls and to take a record back.
trait Values {
    /// How many values (nulls included) the buffers hold.
    fn len(&self) -> usize;
    fn is_null(&self, index: usize) -> bool;
    /// Takes back the values past the first `len`.
    fn truncate(&mut self, len: usize);
    fn push_null(&mut self);
}

fn null_at(nulls: &NullBufferBuilder, index: usize) -> bool {
    index < nulls.len() && !nulls.is_valid(index)
}

impl<N: ArrowNativeType> Values for Primitive<N> {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn is_null(&self, index: usize) -> bool {
        null_at(&self.nulls, index)
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    fn push_null(&mut self) {
        self.values.push(N::default());
        self.nulls.append_null();
    }
}

impl Values for Bytes {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn is_null(&self, index: usize) -> bool {
        null_at(&self.nulls, index)
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        self.values
            .truncate(self.offsets.last().map_or(0, |&end| end as usize));
        self.nulls.truncate(len);
    }

    fn push_null(&mut self) {
        self.offsets.push(self.offsets.last().copied().unwrap_or(0));
        self.nulls.append_null();
    }
}

impl Values for Booleans {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn is_null(&self, index: usize) -> bool {
        null_at(&self.nulls, index)
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        self.nulls.truncate(len);
    }

    fn push_null(&mut self) {
        self.values.append(false);
        self.nulls.append_null();
    }
}

impl Values for Vec<Cell<'_>> {
    fn len(&self) -> usize {
        <[Cell<'_>]>::len(self)
    }

    fn is_null(&self, index: usize) -> bool {
        matches!(self.get(index), Some(Cell::Null))
    }

    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }

    fn push_null(&mut self) {
        self.push(Cell::Null);
    }
}

/// `$body` with `$values` bound to a sink's buffers, whichever they are: a static call per
/// type (the record loop pads and takes back every column of every record).
macro_rules! on_values {
    ($sink:expr, $values:ident => $body:expr) => {
        match $sink {
            ColumnSink::Utf8($values) | ColumnSink::Binary($values) => $body,
            ColumnSink::Boolean($values) => $body,
            ColumnSink::Int8($values) => $body,
            ColumnSink::Int16($values) => $body,
            ColumnSink::Int32($values) => $body,
            ColumnSink::Int64($values) => $body,
            ColumnSink::Float32($values) => $body,
            ColumnSink::Float64($values) => $body,
            ColumnSink::Decimal($values) => $body,
            ColumnSink::Nested(_, $values) => $body,
        }
    };
}

impl<'a> ColumnSink<'a> {
    /// A sink for `n` values; a string or binary one with room for `value_bytes` bytes each.
    pub(crate) fn new(arrow: &ArrowType, n: usize, value_bytes: usize) -> Result<ColumnSink<'a>> {
        // A hint from a part of a few large values must not reserve gigabytes for many rows.
        let bytes = n.saturating_mul(value_bytes).min(MAX_RESERVED_VALUE_BYTES);
        Ok(match arrow {
            ArrowType::Utf8 => ColumnSink::Utf8(Bytes::new(n, bytes)),
            ArrowType::Binary => ColumnSink::Binary(Bytes::new(n, bytes)),
            ArrowType::Boolean => ColumnSink::Boolean(Booleans {
                values: BooleanBufferBuilder::new(n),
                nulls: NullBufferBuilder::new(n),
            }),
            ArrowType::Int8 => ColumnSink::Int8(Primitive::new(arrow, n)),
            ArrowType::Int16 => ColumnSink::Int16(Primitive::new(arrow, n)),
            ArrowType::Int32 | ArrowType::Date32 => ColumnSink::Int32(Primitive::new(arrow, n)),
            ArrowType::Int64 | ArrowType::Timestamp(TimeUnit::Microsecond, _) => {
                ColumnSink::Int64(Primitive::new(arrow, n))
            }
            ArrowType::Float32 => ColumnSink::Float32(Primitive::new(arrow, n)),
            ArrowType::Float64 => ColumnSink::Float64(Primitive::new(arrow, n)),
            ArrowType::Decimal128(_, _) => ColumnSink::Decimal(Primitive::new(arrow, n)),
            other => ColumnSink::Nested(other.clone(), Vec::with_capacity(n)),
        })
    }

    /// The bytes of the values pushed so far, for a string or binary column.
    pub(crate) fn value_bytes(&self) -> Option<usize> {
        match self {
            ColumnSink::Utf8(b) | ColumnSink::Binary(b) => Some(b.values.len()),
            _ => None,
        }
    }

    /// How many values (nulls included) the column holds.
    pub(crate) fn len(&self) -> usize {
        on_values!(self, values => Values::len(values))
    }

    /// Whether the value at `index` is null.
    pub(crate) fn is_null(&self, index: usize) -> bool {
        on_values!(self, values => Values::is_null(values, index))
    }

    /// Takes back the values past the first `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        on_values!(self, values => Values::truncate(values, len))
    }

    pub(crate) fn push_null(&mut self) {
        on_values!(self, values => Values::push_null(values))
    }

    /// Pushes a cell, read where it lies (a copy of a cell the converter had just written
    /// into an argument of its own stalled like the parser's returns, see parse.rs); a nested
    /// column's cell is taken, leaving a null.
    pub(crate) fn push(&mut self, cell: &mut Cell<'a>) -> Result<()> {
        match self {
            ColumnSink::Nested(_, cells) => {
                cells.push(std::mem::replace(cell, Cell::Null));
                Ok(())
            }
            scalar => scalar.push_scalar(cell),
        }
    }

    /// Pushes the value of a cell of a scalar type (read through the reference: a nested
    /// column's children are built from cells that stay where they are).
    fn push_scalar(&mut self, cell: &Cell<'_>) -> Result<()> {
        match (self, cell) {
            (sink, Cell::Null) => sink.push_null(),
            (ColumnSink::Utf8(b), Cell::Str(v)) => b.push(v.as_bytes())?,
            (ColumnSink::Binary(b), Cell::Bin(v)) => b.push(v)?,
            (ColumnSink::Boolean(b), Cell::Bool(v)) => {
                b.values.append(*v);
                b.nulls.append_non_null();
            }
            (ColumnSink::Int8(p), Cell::I8(v)) => p.push(*v),
            (ColumnSink::Int16(p), Cell::I16(v)) => p.push(*v),
            (ColumnSink::Int32(p), Cell::I32(v)) => p.push(*v),
            (ColumnSink::Int64(p), Cell::I64(v)) => p.push(*v),
            (ColumnSink::Float32(p), Cell::F32(v)) => p.push(*v),
            (ColumnSink::Float64(p), Cell::F64(v)) => p.push(*v),
            (ColumnSink::Decimal(p), Cell::Decimal(v)) => p.push(*v),
            (sink, other) => return Err(mismatch(&sink.arrow_type(), other)),
        }
        Ok(())
    }

    fn arrow_type(&self) -> ArrowType {
        match self {
            ColumnSink::Utf8(_) => ArrowType::Utf8,
            ColumnSink::Binary(_) => ArrowType::Binary,
            ColumnSink::Boolean(_) => ArrowType::Boolean,
            ColumnSink::Int8(p) => p.arrow.clone(),
            ColumnSink::Int16(p) => p.arrow.clone(),
            ColumnSink::Int32(p) => p.arrow.clone(),
            ColumnSink::Int64(p) => p.arrow.clone(),
            ColumnSink::Float32(p) => p.arrow.clone(),
            ColumnSink::Float64(p) => p.arrow.clone(),
            ColumnSink::Decimal(p) => p.arrow.clone(),
            ColumnSink::Nested(arrow, _) => arrow.clone(),
        }
    }

    pub(crate) fn finish(self) -> Result<ArrayRef> {
        let invalid = |e: ArrowError| Error::Decode(e.to_string());
        Ok(match self {
            ColumnSink::Utf8(b) => {
                let (offsets, values, nulls) = b.parts();
                Arc::new(StringArray::try_new(offsets, values, nulls).map_err(invalid)?)
            }
            ColumnSink::Binary(b) => {
                let (offsets, values, nulls) = b.parts();
                Arc::new(BinaryArray::try_new(offsets, values, nulls).map_err(invalid)?)
            }
            ColumnSink::Boolean(mut b) => {
                Arc::new(BooleanArray::new(b.values.finish(), b.nulls.finish()))
            }
            ColumnSink::Int8(p) => p.finish_as::<Int8Type>()?,
            ColumnSink::Int16(p) => p.finish_as::<Int16Type>()?,
            ColumnSink::Int32(p) if p.arrow == ArrowType::Date32 => p.finish_as::<Date32Type>()?,
            ColumnSink::Int32(p) => p.finish_as::<Int32Type>()?,
            ColumnSink::Int64(p) if matches!(p.arrow, ArrowType::Timestamp(..)) => {
                p.finish_as::<TimestampMicrosecondType>()?
            }
            ColumnSink::Int64(p) => p.finish_as::<Int64Type>()?,
            ColumnSink::Float32(p) => p.finish_as::<Float32Type>()?,
            ColumnSink::Float64(p) => p.finish_as::<Float64Type>()?,
            ColumnSink::Decimal(p) => p.finish_as::<Decimal128Type>()?,
            ColumnSink::Nested(arrow, cells) => {
                let refs: Vec<&Cell<'_>> = cells.iter().collect();
                build(&arrow, &refs)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_column_past_two_gib_is_refused_before_its_value_is_copied() {
        // Zeroed pages that are never written: the 2 GiB value costs address space, not memory,
        // as long as it is not copied.
        let huge = vec![0u8; 1 << 31];
        let mut column = Bytes::new(2, 16);
        column.push(b"sensor-000001").expect("a small value fits");
        let refused = column.push(&huge).expect_err("the column would pass 2 GiB");
        assert!(
            refused.to_string().contains("more than 2 GiB")
                && refused.to_string().contains("lower maxBytesPerTrigger"),
            "{refused}"
        );
        // Nothing of the refused value was kept: the column still holds its one value.
        assert_eq!((column.values.len(), column.offsets.len()), (13, 2));
        column
            .push(b"sensor-000002")
            .expect("a small value still fits");
        let (offsets, values, _) = column.parts();
        assert_eq!(offsets.as_ref(), &[0, 13, 26]);
        assert_eq!(values.len(), 26);
    }
}

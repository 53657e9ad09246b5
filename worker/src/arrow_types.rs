//! Spark SQL types as Arrow types: the columns the decoder builds, and the types a transform's
//! output is written with (its columns are cast to these, so that the table's files hold the
//! same types whatever DataFusion computed them as).

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Fields, TimeUnit};
use tributary_crds::DataType;

/// The Arrow type of a Spark type. Nested members are nullable, as Spark's are.
pub fn arrow_type(data_type: &DataType) -> ArrowType {
    match data_type {
        DataType::String => ArrowType::Utf8,
        DataType::Boolean => ArrowType::Boolean,
        DataType::Byte => ArrowType::Int8,
        DataType::Short => ArrowType::Int16,
        DataType::Int => ArrowType::Int32,
        DataType::Long => ArrowType::Int64,
        DataType::Float => ArrowType::Float32,
        DataType::Double => ArrowType::Float64,
        DataType::Decimal { precision, scale } => ArrowType::Decimal128(*precision, *scale as i8),
        DataType::Date => ArrowType::Date32,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::TimestampNtz => ArrowType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Binary => ArrowType::Binary,
        DataType::Array(element) => {
            ArrowType::List(Arc::new(Field::new("element", arrow_type(element), true)))
        }
        DataType::Map(key, value) => ArrowType::Map(
            Arc::new(Field::new(
                "key_value",
                ArrowType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(key), false),
                    Field::new("value", arrow_type(value), true),
                ])),
                false,
            )),
            false,
        ),
        DataType::Struct(fields) => ArrowType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name, arrow_type(&f.data_type), true))
                .collect::<Vec<_>>(),
        )),
    }
}

//! The catalog's description of a table (`TableInfo`, `ColumnInfo`) and its three-part
//! name, and the mapping between its columns and Delta (Spark) types.

use deltalake::kernel::{DataType, PrimitiveType, StructField, StructType};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// A three-part Unity Catalog name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// Parses `catalog.schema.table`; each part may be quoted in backticks, as in Spark SQL.
    /// Unity Catalog stores names in lower case.
    pub fn parse(name: &str) -> Result<TableName> {
        let parts: Vec<String> = name
            .split('.')
            .map(|part| part.trim().trim_matches('`').to_ascii_lowercase())
            .collect();
        match parts.as_slice() {
            [catalog, schema, table]
                if parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                }) =>
            {
                Ok(TableName {
                    catalog: catalog.clone(),
                    schema: schema.clone(),
                    table: table.clone(),
                })
            }
            _ => Err(Error::Unsupported(format!(
                "spec.sink.delta.table: \"{name}\" is not a Unity Catalog name catalog.schema.table"
            ))),
        }
    }

    pub fn schema_full_name(&self) -> String {
        format!("{}.{}", self.catalog, self.schema)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// A column as the catalog lists it (`ColumnInfo`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// Spark SQL's spelling, e.g. `bigint`, `array<string>`, `decimal(10,2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_text: Option<String>,
    /// Spark's JSON of the whole field: `{"name":..,"type":..,"nullable":..,"metadata":{}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_json: Option<String>,
    /// `LONG`, `STRING`, `ARRAY`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_precision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_scale: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A table as the catalog describes it (the part of `TableInfo` the worker uses).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TableInfo {
    pub name: String,
    #[serde(default)]
    pub catalog_name: Option<String>,
    #[serde(default)]
    pub schema_name: Option<String>,
    #[serde(default)]
    pub table_id: Option<String>,
    /// MANAGED, EXTERNAL, VIEW, ...
    #[serde(default)]
    pub table_type: Option<String>,
    /// DELTA, PARQUET, CSV, ...
    #[serde(default)]
    pub data_source_format: Option<String>,
    #[serde(default)]
    pub storage_location: Option<String>,
    #[serde(default)]
    pub columns: Vec<ColumnInfo>,
}

impl TableInfo {
    pub fn is_managed(&self) -> bool {
        self.table_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("MANAGED"))
    }

    /// Why this worker cannot append to the table at all, whatever the credentials.
    pub fn unwritable_reason(&self) -> Option<String> {
        let table_type = self.table_type.as_deref().unwrap_or("unknown");
        if !table_type.eq_ignore_ascii_case("MANAGED")
            && !table_type.eq_ignore_ascii_case("EXTERNAL")
        {
            return Some(format!(
                "it is a {table_type}, not a table: Tributary appends to MANAGED or EXTERNAL Delta tables"
            ));
        }
        let format = self.data_source_format.as_deref().unwrap_or("unknown");
        if !format.eq_ignore_ascii_case("DELTA") {
            return Some(format!(
                "its format is {format}: Tributary writes Delta tables only"
            ));
        }
        if self.storage_location.as_deref().unwrap_or("").is_empty() {
            return Some("the catalog gives no storage location for it".into());
        }
        None
    }

    /// The schema the catalog records for the table, from each column's Spark JSON.
    pub fn schema(&self) -> std::result::Result<StructType, String> {
        let mut columns = self.columns.clone();
        columns.sort_by_key(|c| c.position.unwrap_or(i64::MAX));
        let mut fields = Vec::with_capacity(columns.len());
        for column in &columns {
            let Some(json) = column.type_json.as_deref() else {
                return Err(format!(
                    "the catalog lists column {} without its type_json",
                    column.name
                ));
            };
            let field: StructField = serde_json::from_str(json).map_err(|e| {
                format!(
                    "the catalog's type of column {} ({json}) is not a Spark type: {e}",
                    column.name
                )
            })?;
            fields.push(field);
        }
        StructType::try_new(fields).map_err(|e| e.to_string())
    }

    /// The partition columns the catalog records, in order.
    pub fn partition_columns(&self) -> Vec<String> {
        let mut partitioned: Vec<(i64, String)> = self
            .columns
            .iter()
            .filter_map(|c| c.partition_index.map(|i| (i, c.name.clone())))
            .collect();
        partitioned.sort();
        partitioned.into_iter().map(|(_, name)| name).collect()
    }
}

/// The catalog's columns for a table written with `schema`: Spark's type spellings, the whole
/// field as Spark JSON, positions, and the partition columns' order.
pub fn column_infos(
    schema: &StructType,
    partition_by: &[String],
) -> std::result::Result<Vec<ColumnInfo>, String> {
    schema
        .fields()
        .enumerate()
        .map(|(position, field)| {
            let type_json = serde_json::to_string(field)
                .map_err(|e| format!("cannot describe column {}: {e}", field.name()))?;
            let (precision, scale) = match field.data_type() {
                DataType::Primitive(PrimitiveType::Decimal(decimal)) => (
                    Some(i64::from(decimal.precision())),
                    Some(i64::from(decimal.scale())),
                ),
                _ => (None, None),
            };
            Ok(ColumnInfo {
                name: field.name().to_string(),
                type_text: Some(type_text(field.data_type())),
                type_json: Some(type_json),
                type_name: Some(type_name(field.data_type()).to_string()),
                type_precision: precision,
                type_scale: scale,
                position: Some(position as i64),
                nullable: Some(field.is_nullable()),
                partition_index: partition_by
                    .iter()
                    .position(|p| p == field.name())
                    .map(|i| i as i64),
                comment: field.metadata().get("comment").and_then(|v| match v {
                    deltalake::kernel::MetadataValue::String(s) => Some(s.clone()),
                    _ => None,
                }),
            })
        })
        .collect()
}

/// Spark SQL's spelling of a type (its `catalogString`), as the catalog lists it.
fn type_text(data_type: &DataType) -> String {
    match data_type {
        DataType::Primitive(primitive) => match primitive {
            PrimitiveType::String => "string".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Integer => "int".into(),
            PrimitiveType::Short => "smallint".into(),
            PrimitiveType::Byte => "tinyint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Binary => "binary".into(),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp => "timestamp".into(),
            PrimitiveType::TimestampNtz => "timestamp_ntz".into(),
            PrimitiveType::Decimal(decimal) => {
                format!("decimal({},{})", decimal.precision(), decimal.scale())
            }
            other => other.to_string(),
        },
        DataType::Array(array) => format!("array<{}>", type_text(array.element_type())),
        DataType::Map(map) => format!(
            "map<{},{}>",
            type_text(map.key_type()),
            type_text(map.value_type())
        ),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .fields()
                .map(|f| format!("{}:{}", f.name(), type_text(f.data_type())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        DataType::Variant(_) => "variant".into(),
    }
}

/// The catalog's `ColumnTypeName` of a type.
fn type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Primitive(primitive) => match primitive {
            PrimitiveType::String => "STRING",
            PrimitiveType::Long => "LONG",
            PrimitiveType::Integer => "INT",
            PrimitiveType::Short => "SHORT",
            PrimitiveType::Byte => "BYTE",
            PrimitiveType::Float => "FLOAT",
            PrimitiveType::Double => "DOUBLE",
            PrimitiveType::Boolean => "BOOLEAN",
            PrimitiveType::Binary => "BINARY",
            PrimitiveType::Date => "DATE",
            PrimitiveType::Timestamp => "TIMESTAMP",
            PrimitiveType::TimestampNtz => "TIMESTAMP_NTZ",
            PrimitiveType::Decimal(_) => "DECIMAL",
            _ => "USER_DEFINED_TYPE",
        },
        DataType::Array(_) => "ARRAY",
        DataType::Map(_) => "MAP",
        DataType::Struct(_) => "STRUCT",
        DataType::Variant(_) => "VARIANT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::{ArrayType, DecimalType, MapType};

    fn sensor_schema() -> StructType {
        StructType::try_new(vec![
            StructField::new("device_id", DataType::STRING, true),
            StructField::new("temperature", DataType::DOUBLE, true),
            StructField::new(
                "price",
                DataType::Primitive(PrimitiveType::Decimal(
                    DecimalType::try_new(10, 2).expect("valid decimal"),
                )),
                true,
            ),
            StructField::new(
                "tags",
                DataType::Map(Box::new(MapType::new(
                    DataType::STRING,
                    DataType::Array(Box::new(ArrayType::new(DataType::LONG, true))),
                    true,
                ))),
                true,
            ),
            StructField::new("kafka_partition", DataType::INTEGER, false),
        ])
        .expect("valid schema")
    }
    #[test]
    fn names_parse_with_backticks_and_in_lower_case() {
        let name = TableName::parse("Bronze.`iot`.Sensor_Readings").expect("parses");
        assert_eq!(name.to_string(), "bronze.iot.sensor_readings");
        assert_eq!(name.schema_full_name(), "bronze.iot");
        for bad in ["a.b", "a.b.c.d", "a..c", "a.b.c d"] {
            let error = TableName::parse(bad).expect_err(bad).to_string();
            assert!(error.contains("is not a Unity Catalog name"), "{error}");
        }
    }
    #[test]
    fn columns_carry_spark_types_positions_and_partitions() {
        let columns =
            column_infos(&sensor_schema(), &["kafka_partition".into()]).expect("describes");
        let texts: Vec<&str> = columns
            .iter()
            .map(|c| c.type_text.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(
            texts,
            [
                "string",
                "double",
                "decimal(10,2)",
                "map<string,array<bigint>>",
                "int"
            ]
        );
        let names: Vec<&str> = columns
            .iter()
            .map(|c| c.type_name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(names, ["STRING", "DOUBLE", "DECIMAL", "MAP", "INT"]);
        assert_eq!(columns[2].type_precision, Some(10));
        assert_eq!(columns[2].type_scale, Some(2));
        assert_eq!(columns[4].partition_index, Some(0));
        assert_eq!(columns[4].nullable, Some(false));
        assert_eq!(columns[0].partition_index, None);
        let json: serde_json::Value =
            serde_json::from_str(columns[1].type_json.as_deref().unwrap_or("")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"name": "temperature", "type": "double", "nullable": true, "metadata": {}})
        );
    }
    #[test]
    fn a_table_info_gives_back_the_schema_it_was_created_with() {
        let schema = sensor_schema();
        let mut columns = column_infos(&schema, &["kafka_partition".into()]).expect("describes");
        columns.reverse(); // the catalog may list them in any order: positions decide
        let info = TableInfo {
            name: "t".into(),
            catalog_name: None,
            schema_name: None,
            table_id: Some("id".into()),
            table_type: Some("EXTERNAL".into()),
            data_source_format: Some("DELTA".into()),
            storage_location: Some("file:///lake/t".into()),
            columns,
        };
        assert_eq!(info.schema().expect("schema"), schema);
        assert_eq!(info.partition_columns(), ["kafka_partition"]);
        assert_eq!(info.unwritable_reason(), None);
        assert!(!info.is_managed());
    }
    #[test]
    fn tables_that_cannot_be_written_say_why() {
        let info = |table_type: &str, format: &str, location: Option<&str>| TableInfo {
            name: "t".into(),
            catalog_name: None,
            schema_name: None,
            table_id: None,
            table_type: Some(table_type.into()),
            data_source_format: Some(format.into()),
            storage_location: location.map(str::to_string),
            columns: Vec::new(),
        };
        let reason = |t: TableInfo| t.unwritable_reason().unwrap_or_default();
        assert!(reason(info("VIEW", "DELTA", Some("x"))).contains("it is a VIEW, not a table"));
        assert!(reason(info("EXTERNAL", "CSV", Some("x"))).contains("its format is CSV"));
        assert!(reason(info("EXTERNAL", "DELTA", None)).contains("no storage location"));
        assert!(info("MANAGED", "DELTA", Some("x")).is_managed());
        let no_json = TableInfo {
            columns: vec![ColumnInfo {
                name: "a".into(),
                type_text: Some("int".into()),
                type_json: None,
                type_name: None,
                type_precision: None,
                type_scale: None,
                position: Some(0),
                nullable: Some(true),
                partition_index: None,
                comment: None,
            }],
            ..info("EXTERNAL", "DELTA", Some("x"))
        };
        assert!(
            no_json
                .schema()
                .expect_err("no type_json")
                .contains("column a without its type_json")
        );
    }
}

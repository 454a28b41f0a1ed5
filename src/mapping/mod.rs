//! Mappings: loaded from YAML and validated; documents turned into rows; BSON turned into
//! Postgres values. Pure: no I/O besides reading the mapping files.

pub mod convert;
mod decimal;
pub mod json;
pub mod key;
pub mod load;
pub mod model;
pub mod types;
mod validate;
pub mod value;
mod view;
mod yaml;

#[cfg(test)]
mod convert_props;
#[cfg(test)]
mod convert_tests;
#[cfg(test)]
mod load_tests;

pub use convert::{
    convert_document, convert_key, convert_raw_document, convert_value, ConvertError, Converted,
};
pub use load::{load, load_placed, MappingError, MappingErrors, Places};

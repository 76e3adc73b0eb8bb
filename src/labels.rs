//! Labels: containerd's size rule and how Update requests change them by field paths.
//! Shared by the metadata store and the snapshotters.

use std::collections::BTreeMap;

use crate::errdefs::{Class, Error};

/// The largest key plus value a label may have.
pub const MAX_LABEL_SIZE: usize = 4096;

/// Checks one label the way containerd's `labels.Validate` does, and refuses an empty key
/// (which containerd's store refuses when it writes it).
pub fn validate_label(key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid_argument(
            "label key must not be empty: invalid argument",
        ));
    }
    let size = key.len() + value.len();
    if size > MAX_LABEL_SIZE {
        let short: String = key.chars().take(64).collect();
        return Err(Error::wrapped(
            Class::InvalidArgument,
            format!(
                "label key and value length ({size} bytes) greater than maximum size \
                 ({MAX_LABEL_SIZE} bytes), key: {short}"
            ),
        ));
    }
    Ok(())
}

/// Applies the labels of an Update request to `current` by its field paths, as containerd's
/// stores do: no paths or `labels` replace them all, `labels.<k>` sets one key (removing it
/// when the request has no value or an empty one). Empty values are never kept. A path
/// that is not about labels is returned as the error, for the caller to name.
pub fn update_labels<'p>(
    current: &mut BTreeMap<String, String>,
    requested: &BTreeMap<String, String>,
    paths: &'p [String],
) -> Result<(), &'p str> {
    if paths.is_empty() {
        current.clone_from(requested);
    }
    for path in paths {
        if path == "labels" {
            current.clone_from(requested);
        } else if let Some(key) = path.strip_prefix("labels.") {
            match requested.get(key) {
                Some(v) if !v.is_empty() => {
                    current.insert(key.to_string(), v.clone());
                }
                _ => {
                    current.remove(key);
                }
            }
        } else {
            return Err(path);
        }
    }
    current.retain(|_, v| !v.is_empty());
    Ok(())
}

/// Checks every label of a set.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    labels.iter().try_for_each(|(k, v)| validate_label(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_label_is_invalid_argument() {
        let key = "k".repeat(100);
        let err = validate_label(&key, &"v".repeat(4000)).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(
            err.message(),
            format!(
                "label key and value length (4100 bytes) greater than maximum size (4096 bytes), \
                 key: {}: invalid argument",
                "k".repeat(64)
            )
        );
        assert!(validate_label(&"k".repeat(96), &"v".repeat(4000)).is_ok());
    }
}

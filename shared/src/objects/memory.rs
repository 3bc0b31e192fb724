//! A bucket in memory, the in-memory twin of [`super::S3Objects`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectError, ObjectStore};

/// A bucket in memory, for unit tests: it can be made to fail.
#[derive(Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    failing: AtomicBool,
    puts: AtomicUsize,
}

impl MemoryObjects {
    /// Every call fails while `on`.
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// The stored objects, by key.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().unwrap().clone()
    }

    /// Puts attempted, failed ones included.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    pub fn remove(&self, key: &str) {
        self.objects.lock().unwrap().remove(key);
    }

    pub fn insert(&self, key: &str, body: Vec<u8>) {
        self.objects.lock().unwrap().insert(key.to_owned(), body);
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn put(&self, key: &str, body: Bytes, _: &str) -> Result<(), ObjectError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(ObjectError::Failed("injected".into()));
        }
        match self.objects.lock().unwrap().entry(key.to_owned()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(ObjectError::Exists),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(body.to_vec());
                Ok(())
            }
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, ObjectError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ObjectError::Failed("injected".into()));
        }
        let object = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or(ObjectError::Missing)?;
        if object.len() as u64 > max_bytes {
            return Err(ObjectError::TooLarge(max_bytes));
        }
        Ok(object)
    }
}

//! `wasi:keyvalue/store` and `atomics` (`0.2.0-draft`) for the components,
//! over the host's answer store ([`crate::store`]): SQLite, Redis or memory.
//!
//! Every bucket name opens the same store (the store is the host's choice,
//! `--cache`); with no store (`--cache off`) `open` answers `no-such-store`
//! and the component keeps answers in its own memory. A backend failure
//! reaches the guest as `error::other` (the guest then goes on uncached);
//! [`crate::store::Guarded`] has already said so once on stderr.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::runtime::bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use crate::store::Backend;

/// An open bucket (the guest's handle to the one store).
pub struct Bucket;

/// An error on its way to the guest.
pub enum KvError {
    /// No store is configured.
    NoSuchStore,
    /// The store failed.
    Other(String),
}

impl From<wasmtime::component::ResourceTableError> for KvError {
    fn from(e: wasmtime::component::ResourceTableError) -> KvError {
        KvError::Other(e.to_string())
    }
}

impl From<crate::store::BackendError> for KvError {
    fn from(e: crate::store::BackendError) -> KvError {
        KvError::Other(e.to_string())
    }
}

/// What the instances of one run share: the store, if any.
#[derive(Clone, Default)]
pub struct KvCtx {
    backend: Option<Arc<dyn Backend>>,
}

impl KvCtx {
    /// Over `backend` (`None`: no store).
    pub fn new(backend: Option<Arc<dyn Backend>>) -> KvCtx {
        KvCtx { backend }
    }

    fn backend(&self) -> Result<&Arc<dyn Backend>, KvError> {
        self.backend.as_ref().ok_or(KvError::NoSuchStore)
    }
}

/// A view of an instance's store data for the keyvalue functions.
pub struct KvView<'a> {
    /// The shared store.
    pub ctx: &'a KvCtx,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

impl store::Host for KvView<'_> {
    fn open(&mut self, _identifier: String) -> Result<Resource<Bucket>, KvError> {
        self.ctx.backend()?;
        Ok(self.table.push(Bucket)?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::Other(m) => store::Error::Other(m),
        })
    }
}

impl store::HostBucket for KvView<'_> {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.table.get(&bucket)?;
        Ok(self.ctx.backend()?.get(&key)?)
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        self.table.get(&bucket)?;
        Ok(self.ctx.backend()?.set(&key, &value)?)
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        self.table.get(&bucket)?;
        Ok(self.ctx.backend()?.delete(&key)?)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        self.table.get(&bucket)?;
        Ok(self.ctx.backend()?.exists(&key)?)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        self.table.get(&bucket)?;
        let (keys, cursor) = self.ctx.backend()?.list_keys(cursor)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, KvError> {
        self.table.get(&bucket)?;
        Ok(self.ctx.backend()?.increment(&key, delta)?)
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds `wasi:keyvalue/store` and `atomics` to `linker`; `view` finds an
/// instance's [`KvView`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<_, HasKv>(linker, view)?;
    atomics::add_to_linker::<_, HasKv>(linker, view)?;
    Ok(())
}

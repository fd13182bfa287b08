//! The bindings and the [`KeyValue`] impl.

use std::cell::RefCell;

use tip_enrich::{EnvLookup, KeyValue, StoreError, settings};

#[cfg(not(feature = "spin"))]
wit_bindgen::generate!({
    inline: "
        package tip:enrich-keyvalue;
        world answer-store {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        }
    ",
    path: "../wit/deps/keyvalue-0.2.0-draft.wit",
    world: "tip:enrich-keyvalue/answer-store",
    generate_all,
});
#[cfg(not(feature = "spin"))]
pub use self::wasi::keyvalue::{atomics, store};

#[cfg(feature = "spin")]
wit_bindgen::generate!({
    inline: "
        package tip:enrich-keyvalue;
        world answer-store {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
        }
    ",
    path: "../wit/deps/keyvalue-0.2.0-draft2.wit",
    world: "tip:enrich-keyvalue/answer-store",
    generate_all,
});
#[cfg(feature = "spin")]
pub use self::wasi::keyvalue::{atomics, store};

fn describe(e: store::Error) -> StoreError {
    StoreError(match e {
        store::Error::NoSuchStore => "no such store".to_owned(),
        store::Error::AccessDenied => "access denied".to_owned(),
        store::Error::Other(m) => tip_enrich::bounded(&m, 200).into_owned(),
    })
}

/// An open bucket; reports its first failure once on stderr.
struct Bucket {
    name: String,
    inner: store::Bucket,
    warned: bool,
}

impl Bucket {
    fn check<T>(&mut self, r: Result<T, store::Error>) -> Result<T, StoreError> {
        r.map_err(|e| {
            let e = describe(e);
            if !self.warned {
                self.warned = true;
                eprintln!(
                    "tip-enrich: warning: the answer store (wasi:keyvalue bucket {:?}) failed: {e}; lookups go on uncached",
                    self.name
                );
            }
            e
        })
    }
}

impl KeyValue for Bucket {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.inner.get(key);
        self.check(r)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let r = self.inner.set(key, value);
        self.check(r)
    }

    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        let r = self.inner.delete(key);
        self.check(r)
    }

    fn increment(&mut self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let r = increment(&self.inner, key, delta);
        self.check(r)
    }
}

#[cfg(not(feature = "spin"))]
fn increment(bucket: &store::Bucket, key: &str, delta: u64) -> Result<u64, store::Error> {
    atomics::increment(bucket, key, delta)
}

/// draft2's `increment` counts in `s64`.
#[cfg(feature = "spin")]
fn increment(bucket: &store::Bucket, key: &str, delta: u64) -> Result<u64, store::Error> {
    let delta = i64::try_from(delta).map_err(|_| store::Error::Other("delta too large".into()))?;
    let value = atomics::increment(bucket, key, delta)?;
    u64::try_from(value).map_err(|_| store::Error::Other(format!("{key} holds a negative count")))
}

/// The instance's bucket: not tried yet, none opened, or open.
enum State {
    Untried,
    None,
    Open(Bucket),
}

thread_local! {
    static BUCKET: RefCell<State> = const { RefCell::new(State::Untried) };
}

fn open(env: EnvLookup<'_>) -> State {
    let named = env(settings::STORE_BUCKET.env)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let names: Vec<String> = match named {
        // No bucket at all: for hosts whose calls trap without one
        // (wasmCloud without a keyvalue link).
        Some(name) if name == "off" => Vec::new(),
        Some(name) => vec![name],
        // wasmCloud's Redis provider warns on every call to a named bucket,
        // and every name is the same store there.
        None if cfg!(feature = "wasmcloud") => vec![String::new()],
        None => vec!["default".to_owned(), String::new()],
    };
    for name in names {
        if let Ok(inner) = store::open(&name) {
            return State::Open(Bucket {
                name,
                inner,
                warned: false,
            });
        }
    }
    State::None
}

/// Runs `f` with the instance's bucket (opened on first use, with the
/// settings in `env`), or `None` when no bucket opens or it is in use.
pub fn with_bucket<R>(env: EnvLookup<'_>, f: impl FnOnce(Option<&mut dyn KeyValue>) -> R) -> R {
    BUCKET.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => {
            if matches!(*state, State::Untried) {
                *state = open(env);
            }
            match &mut *state {
                State::Open(bucket) => f(Some(bucket)),
                State::Untried | State::None => f(None),
            }
        }
        Err(_) => f(None),
    })
}

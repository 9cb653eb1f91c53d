//! Keeps a loaded skeleton together with the storage its object lives in, so the
//! agent can hold telemetry in a struct without a lifetime parameter.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use libbpf_rs::OpenObject;

pub(crate) struct OwnedSkel<S> {
    // Declared before `storage` and dropped by hand first: the skeleton points into it.
    skel: ManuallyDrop<S>,
    storage: NonNull<MaybeUninit<OpenObject>>,
}

impl<S> OwnedSkel<S> {
    /// `build` opens, configures and loads a skeleton in the storage it is given.
    pub(crate) fn new<E>(
        build: impl FnOnce(&'static mut MaybeUninit<OpenObject>) -> Result<S, E>,
    ) -> Result<OwnedSkel<S>, E> {
        let storage = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        // SAFETY: the box was just leaked, so this is the only reference; it stays
        // valid until `Drop` reclaims it, after the skeleton borrowing it is gone.
        let slot: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *storage.as_ptr() };
        match build(slot) {
            Ok(skel) => Ok(OwnedSkel {
                skel: ManuallyDrop::new(skel),
                storage,
            }),
            Err(e) => {
                // SAFETY: `build` consumed the only borrow; a failed open or load
                // drops whatever it wrote, and a `MaybeUninit` box frees without
                // dropping its contents.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                Err(e)
            }
        }
    }

    pub(crate) fn get(&self) -> &S {
        &self.skel
    }
}

impl<S> Drop for OwnedSkel<S> {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, before the storage it borrows.
        unsafe { ManuallyDrop::drop(&mut self.skel) };
        // SAFETY: `storage` came from `Box::leak` in `new` and nothing borrows it now.
        drop(unsafe { Box::from_raw(self.storage.as_ptr()) });
    }
}

// SAFETY: the storage is owned exclusively by this value; sending it moves the
// skeleton and its storage together.
unsafe impl<S: Send> Send for OwnedSkel<S> {}

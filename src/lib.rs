//! lazycfs: a lazy, zero-copy reader and FUSE server for composefs/EROFS images.
//!
//! The image is mapped once and decoded on demand: [`erofs`] is the format decoder,
//! [`check`] a full consistency walk, [`dump`] prints an image as a composefs dumpfile, and
//! [`objects`] lists the basedir objects it references.
#![warn(missing_docs)]
// `unsafe` is `sys`'s alone (it allows it, with a SAFETY comment on each use).
#![deny(unsafe_code)]

pub mod check;
pub mod composefs;
pub mod content;
pub mod create;
pub mod dump;
pub mod erofs;
pub mod mount;
pub mod objects;
pub mod server;
pub mod service;
mod sys;
pub mod view;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! The image normalisation map job (in progress).

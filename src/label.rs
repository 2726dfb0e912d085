//! Enums whose variants are the values of a metric label.
//!
//! A label enum's variants, their label texts, `ALL` and the index into per-value metric
//! tables all come from the one list given to [`label_enum!`], so a new label value is one
//! line there and cannot be left out of `ALL` or get another variant's index. It lives in its
//! own module so that the modules declaring label enums (`compare`, `mirror_policy`) and
//! `metrics`, which defines the metrics over them, do not import each other.

/// A metric label's set of values.
pub trait Label: Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value as it appears in the stat name.
    fn as_str(self) -> &'static str;
    /// Position in [`Label::ALL`].
    fn index(self) -> usize;
}

/// Declares a label enum: `Variant = "text",` per value. Generates the enum (with
/// `Debug, Clone, Copy, PartialEq, Eq`), inherent `ALL`, `as_str` and `index`, and the
/// [`Label`] impl.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label text in the stat name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Position in `ALL`, for per-value metric tables. No discriminants are given, so
            /// a variant's discriminant is its position in the list `ALL` is built from.
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl $crate::label::Label for $name {
            const ALL: &'static [$name] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn index(self) -> usize {
                $name::index(self)
            }
        }
    };
}

pub(crate) use label_enum;

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    label_enum! {
        /// Doc comments pass through, on the enum and its variants.
        enum Colour {
            Red = "red",
            /// Declaration order, not alphabetical, decides the index.
            Blue = "blue",
            Green = "green",
        }
    }

    fn generic<L: Label>() -> Vec<(usize, &'static str)> {
        L::ALL.iter().map(|l| (l.index(), l.as_str())).collect()
    }

    #[test]
    fn all_texts_and_indexes_follow_the_list() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Blue, Colour::Green]);
        assert_eq!(Colour::Green.as_str(), "green");
        assert_eq!(Colour::Blue.index(), 1);
        assert_eq!(generic::<Colour>(), [(0, "red"), (1, "blue"), (2, "green")]);
    }
}

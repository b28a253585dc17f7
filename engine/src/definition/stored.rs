//! The stored form of a definition: MessagePack, as the runtime records it in
//! an event.

use super::model::CaseDefinition;

impl CaseDefinition {
    /// Encodes the definition as MessagePack with field names (so that a later
    /// version of the model, with new defaulted fields, still reads it).
    ///
    /// # Errors
    /// Only if the encoder fails, which for this model it does not in practice.
    pub fn to_msgpack(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// Decodes a definition written by [`CaseDefinition::to_msgpack`] (or by
    /// `rmp_serde::to_vec`). Conditions are compiled again as they are read.
    /// It does not re-validate: call [`CaseDefinition::validate`] for bytes
    /// of unknown origin.
    ///
    /// # Errors
    /// `rmp_serde::decode::Error` if the bytes are not a definition.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let def = CaseDefinition::from_toml(
            "key = 'k'\nname = 'K'\nversion = 1\nretention = { group = 'group1' }\n\
             [[milestones]]\nkey = 'm'\nname = 'M'\nentry = [{ if = \"x == 1\" }]\n\
             [[fields]]\nkey = 'x'\ntype = 'integer'",
        )
        .expect("valid");
        let bytes = def.to_msgpack().expect("encodes");
        assert_eq!(CaseDefinition::from_msgpack(&bytes).expect("decodes"), def);
        let compact = rmp_serde::to_vec(&def).expect("encodes");
        assert_eq!(
            CaseDefinition::from_msgpack(&compact).expect("decodes"),
            def
        );
        assert!(CaseDefinition::from_msgpack(b"\x01\x02").is_err());

        // Teams and search flags are trailing, defaulted fields: present or
        // absent, both encodings read back.
        let with_both = CaseDefinition::from_toml(
            "key = 'k'\nname = 'K'\nversion = 1\nretention = { group = 'group1' }\nteam = 'cid'\n\
             [[activities]]\nkey = 'a'\nname = 'A'\nkind = 'human_task'\nroles = ['r']\nteam = 'ppu'\n\
             [[activities]]\nkey = 'b'\nname = 'B'\nkind = 'human_task'\nroles = ['r']\n\
             [[fields]]\nkey = 'x'\ntype = 'text'\nsearch = 'text'\n\
             [[fields]]\nkey = 'y'\ntype = 'text'",
        )
        .expect("valid");
        for encoded in [
            with_both.to_msgpack().expect("encodes"),
            rmp_serde::to_vec(&with_both).expect("encodes"),
        ] {
            assert_eq!(
                CaseDefinition::from_msgpack(&encoded).expect("decodes"),
                with_both
            );
        }
    }
}

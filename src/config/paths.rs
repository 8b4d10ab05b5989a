//! Path checks the runtime-file checks of every crew kind share. A leaf: it imports no
//! other part of `config`.

use std::path::Path;

/// Whether the dotted Python `module` is a file (or package) under `dir`.
pub(super) fn python_module_exists(dir: &Path, module: &str) -> bool {
    let relative = module.replace('.', "/");
    dir.join(format!("{relative}.py")).is_file()
        || dir.join(&relative).join("__init__.py").is_file()
}

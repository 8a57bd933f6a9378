//! What the work generator's tests share: a published CernVM-FS repository to name in
//! workunits' data.json.

use std::path::Path;

use gah_workgen::boinc::DataPlane;

/// A CernVM-FS repository published into `dir/published` (what `gah deploy` publishes), as the
/// work generator names it in each workunit's data.json.
pub fn published_plane(dir: &Path) -> DataPlane {
    let (tree, published) = (dir.join("tree"), dir.join("published"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("README"), b"a tree").unwrap();
    gah_publish::publish(&tree, &published, "gentoo.gah", &dir.join("keys")).unwrap();
    DataPlane { name: "gentoo.gah".into(), url: "http://127.0.0.1/gah/download/cvmfs/gentoo.gah".into(), published }
}

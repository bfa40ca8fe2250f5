"""The instance-tree calls of the jIO API, as the reference proxy answers them.

Both sides use these names: the master serves them and `slapgrid show` calls them. A body
is a JSON object; `instance_tree_list` answers `{"result_list": [{"title": …}, …]}` and
`instance_tree` one document with `software_release_uri`, `state`, `parameters`,
`connection_parameters`, `computer_guid`, `compute_partition_id` and so on.
"""

LIST_PATH = "slapos.allDocs.v0.instance_tree_list"
GET_PATH = "slapos.get.v0.instance_tree"

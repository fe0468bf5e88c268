-- Orthanc: send every MR image stored in Orthanc to the s3f-edge node, registered in DicomModalities as
-- "s3f-edge". The node's reports (SR, no pixels) are not sent back to it.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags["Modality"] == "MR" then
    SendToModality(instanceId, "s3f-edge")
  end
end

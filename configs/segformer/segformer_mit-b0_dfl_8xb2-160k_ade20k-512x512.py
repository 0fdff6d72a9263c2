# SegFormer MiT-B0 on ADE20K 512x512 (160k iterations) with DualFocalLoss in
# softmax mode (learnable exponent, adaptive class weights over the 150
# classes) on its all-MLP decode head. SegFormer's optimiser (AdamW, no decay
# on norms and position blocks, 10x lr on the head) is kept; gamma, a parameter of
# the head, trains as the head does (10x lr) without weight decay: mmengine picks
# the longest matching key, so 'gamma_logit' must restate the head's lr_mult.
#
#   python tools/train.py configs/segformer/segformer_mit-b0_dfl_8xb2-160k_ade20k-512x512.py
_base_ = [
    'mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
    '../_base_/dfl_seg.py'
]

model = dict(
    decode_head=dict(
        loss_decode=dict(
            _delete_=True, **_base_.dfl_loss, num_classes=150)))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'gamma_logit': dict(lr_mult=10.0, decay_mult=0.0)}))
